"""Load a model, capture its KV cache for one prompt, and look at one head's keys.

    PYTHONPATH=build/python python3 examples/python/capture_kv.py
"""
import numpy as np

import kvscope

m = kvscope.load("data/models/stories260K/stories260K.bin")
print(m)
ids = m.tokenize("Once upon a time, there was a little girl named Lily. She loved to play "
                 "outside in the sunshine.")
logits, cache = m.run_with_cache(ids)            # cache["k"]: [layer, kv_head, token, head_dim]
print("next token:", repr(m.decode([int(logits[-1].argmax())])))
for name, a in cache.items():
    print(f"{name:11s} {a.shape}")
k = cache["k_pre_rope"][2, 0]                     # layer 2, KV head 0: [token, head_dim]
s = np.linalg.svd(k, compute_uv=False)
energy = np.cumsum(s**2) / np.sum(s**2)
print("layer 2 head 0 pre-RoPE keys: rank for 90% of the energy =",
      int(np.searchsorted(energy, 0.9) + 1), "of", k.shape[1])
