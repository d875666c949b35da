"""An eviction policy in ten lines, run by the frontier next to StreamingLLM and SnapKV.
It keeps the first 4 tokens and, of the rest, the keys that the last 8 queries attend to
most (summed over the query heads of each KV head).

    PYTHONPATH=build/python python3 examples/python/custom_policy.py
"""
import numpy as np

import kvscope


class RecentQueries(kvscope.Policy):
    window = 8  # ask for the last 8 queries of every query head

    def select(self, layer, keys, values, queries, budget):
        group = queries.shape[0] // keys.shape[0]
        kept = []
        for g, b in enumerate(budget):
            score = np.einsum("hqd,kd->k", queries[g * group:(g + 1) * group], keys[g])
            score[:4] = np.inf  # attention sinks stay
            kept.append(np.sort(np.argsort(-score, kind="stable")[:b]))
        return kept


kvscope.register_policy("recent_queries", RecentQueries())
files = kvscope.run("examples/python/custom_policy.yaml", results="build/examples", force=True)
print("\n".join(str(f) for f in files))
