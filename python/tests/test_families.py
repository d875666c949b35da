"""Every family kvscope loads, from random-weight checkpoints written here (synthetic.py),
through kvscope.load and run_with_cache; the attention pattern is checked against the
family's own mask (sliding windows) recomputed here."""

import numpy as np
import pytest

import kvscope
import synthetic
from conftest import STORIES, TINY


@pytest.mark.parametrize("family", synthetic.FAMILIES)
def test_every_family_loads_and_runs(family, tmp_path):
    d = synthetic.write(family, tmp_path / family)
    m = kvscope.load(d, threads=1)
    c = m.config
    cfg = synthetic.config(family)
    assert c["arch"] == family
    assert (c["n_layers"], c["n_heads"], c["n_kv_heads"], c["head_dim"], c["vocab_size"]) == (
        synthetic.LAYERS, synthetic.HEADS, cfg["num_key_value_heads"], synthetic.HEAD_DIM,
        synthetic.VOCAB)
    ids = m.tokenize("Once upon a time there was a little dog who liked to run")
    T = len(ids)
    logits, cache = m.run_with_cache(ids, names=("k_pre_rope", "k", "v", "pattern"))
    assert logits.shape == (T, synthetic.VOCAB) and np.all(np.isfinite(logits))
    assert cache["k"].shape == (synthetic.LAYERS, cfg["num_key_value_heads"], T,
                                synthetic.HEAD_DIM)
    p = cache["pattern"]
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-5)  # rows are distributions
    # Which keys a query may see: causal, and within the sliding window on windowed layers
    # (Mistral every layer; Gemma 2 every other layer from 0; Gemma 3 all but every third).
    window = cfg.get("sliding_window") or 0
    for l in range(synthetic.LAYERS):
        windowed = {"mistral": True, "gemma2": l % 2 == 0,
                    "gemma3_text": (l + 1) % cfg.get("sliding_window_pattern", 1) != 0,
                    "phi3": True}.get(family, False) and window > 0
        q = np.arange(T)[:, None]
        k = np.arange(T)[None, :]
        visible = (k <= q) & ((q - k < window) if windowed else True)
        assert np.all(p[l][:, ~visible] == 0), f"layer {l} attends outside its mask"
        assert np.all(p[l][:, visible] > 0), f"layer {l} ignores a key it may see"


def test_the_shipped_formats_load():
    for path, fmt in ((STORIES, "llama2c"), (TINY, "hf-safetensors")):
        assert kvscope.load(path).config["format"] == fmt
