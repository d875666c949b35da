"""Eviction policies written in Python run in the frontier like built-in ones: one that
keeps what StreamingLLM keeps gives StreamingLLM's numbers, row for row."""

import csv
import pathlib

import numpy as np
import pytest

import kvscope
from conftest import ROOT

SINKS = 4


class PyStreaming(kvscope.Policy):
    """StreamingLLM in Python: the first SINKS positions, then the most recent ones."""

    def select(self, layer, keys, values, queries, budget, positions):
        kept = []
        for g, b in enumerate(budget):
            pos = positions[g]
            sink = np.flatnonzero((pos >= 0) & (pos < SINKS))[:b]
            rest = np.flatnonzero(~((pos >= 0) & (pos < SINKS)))
            recent = rest[np.argsort(-pos[rest], kind="stable")][:max(b - len(sink), 0)]
            kept.append(np.concatenate([sink, recent]))
        return kept


CONFIG = """\
kind: kv_frontier
name: {name}
threads: 1
seed: 3
models:
  - name: stories260K
    path: data/models/stories260K/stories260K.bin
texts:
  - name: valid
    path: data/text/tinystories/tinystories_valid_head.txt
    doc_separator: "<|endoftext|>"
    max_bytes: 30000
kv_frontier:
  methods: [{methods}]
  budgets: [0.5, 0.25]
  during_decoding: true
  tasks: [continuation, passkey]
  filler:
    path: data/text/tinystories/tinystories_valid_head.txt
    doc_separator: "<|endoftext|>"
    max_bytes: 40000
  continuation: {{window: 64, prefill: 0.75, windows: 3}}
  passkey: {{lengths: [48, 96], depths: [0, 0.5, 1], key: 4, token_lo: 259, token_hi: 512, trials: 2}}
"""


def frontier(tmp_path, name, methods):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(CONFIG.format(name=name, methods=methods))
    files = kvscope.run(cfg, results=tmp_path / "results", digits=17)
    (table,) = [f for f in files if f.name == "frontier.csv"]
    with open(table) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def registered():
    kvscope.register_policy("py_streaming", PyStreaming(), "StreamingLLM, in Python")
    yield
    kvscope.unregister_policy("py_streaming")


def test_a_python_streaming_policy_gives_streamings_numbers(tmp_path, registered):
    assert "py_streaming" in kvscope.policies()
    rows = frontier(tmp_path, "pystream", "streaming, py_streaming")
    key = lambda r: (r["budget"], r["task"], r["measure"])
    builtin = {key(r): r for r in rows if r["method"] == "streaming"}
    python = {key(r): r for r in rows if r["method"] == "py_streaming"}
    assert builtin and set(builtin) == set(python)
    for k, r in builtin.items():
        for col in ("value", "se", "delta", "delta_se", "items", "kv_share", "side_bytes"):
            assert python[k][col] == r[col], f"{k} {col}: {python[k][col]} != {r[col]}"
    # ... and eviction did something: the full cache scores differently at a quarter.
    full = {(r["task"], r["measure"]): r["value"] for r in rows if r["method"] == "full"}
    assert any(full[(r["task"], r["measure"])] != r["value"] for r in builtin.values()
               if r["budget"] == "0.25")


class OverBudget(kvscope.Policy):
    def select(self, layer, keys, values, queries, budget):
        return [np.arange(keys.shape[1]) for _ in budget]


class Failing(kvscope.Policy):
    def select(self, layer, keys, values, queries, budget):
        return 1 / 0


def test_a_policy_that_breaks_its_budget_or_raises_fails_the_run(tmp_path):
    kvscope.register_policy("py_over", OverBudget())
    kvscope.register_policy("py_failing", Failing())
    try:
        with pytest.raises(ValueError, match=r"'py_over' \(Python\), layer 0: head 0: keeps"):
            frontier(tmp_path, "over", "py_over")
        with pytest.raises(ZeroDivisionError):
            frontier(tmp_path, "failing", "py_failing")
        assert not any((tmp_path / "results").glob("*/manifest.json"))
    finally:
        kvscope.unregister_policy("py_over")
        kvscope.unregister_policy("py_failing")


def test_built_in_names_and_bad_policies_are_refused():
    with pytest.raises(ValueError, match="'streaming' is built in"):
        kvscope.register_policy("streaming", PyStreaming())
    with pytest.raises(ValueError, match="plain name"):
        kvscope.register_policy("a+b", PyStreaming())
    with pytest.raises(TypeError, match="no select"):
        kvscope.register_policy("nothing", object())
    assert "nothing" not in kvscope.policies()


def test_queries_arrive_when_a_window_is_asked(tmp_path):
    seen = {}

    class Probe(PyStreaming):
        window = 3

        def select(self, layer, keys, values, queries, budget, positions):
            seen.setdefault("q", queries.shape)
            seen.setdefault("k", keys.shape)
            return super().select(layer, keys, values, queries, budget, positions)

    kvscope.register_policy("py_probe", Probe())
    try:
        frontier(tmp_path, "probe", "py_probe")
    finally:
        kvscope.unregister_policy("py_probe")
    assert seen["q"][0] == 8 and seen["q"][1:] == (3, 8)  # stories260K: 8 heads of 8
    assert seen["k"][0] == 4 and seen["k"][2] == 8        # 4 KV heads


def test_update_is_called_while_decoding_and_select_after_prefill(tmp_path):
    calls = {"select": [], "update": []}

    class Counting(PyStreaming):
        def select(self, layer, keys, values, queries, budget, positions, step):
            calls["select"].append(step)
            return super().select(layer, keys, values, queries, budget, positions)

        def update(self, layer, keys, values, queries, budget, positions, step):
            calls["update"].append(step)
            return super().select(layer, keys, values, queries, budget, positions)

    kvscope.register_policy("py_counting", Counting())
    kvscope.register_policy("py_streaming", PyStreaming())
    try:
        rows = frontier(tmp_path, "counting", "py_streaming, py_counting")
    finally:
        kvscope.unregister_policy("py_counting")
        kvscope.unregister_policy("py_streaming")
    assert calls["select"] and set(calls["select"]) == {0}
    assert calls["update"] and min(calls["update"]) >= 1
    # Delegating update to the same rule changes nothing.
    by = {}
    for r in rows:
        by.setdefault(r["method"], {})[(r["budget"], r["task"], r["measure"])] = r["value"]
    assert by["py_counting"] == by["py_streaming"]
