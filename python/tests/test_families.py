"""Every family kvscope loads, from random-weight checkpoints written here (synthetic.py),
through kvscope.load and run_with_cache; the attention pattern is checked against the
family's own mask (sliding windows) recomputed here. And the GGUF format: stories260K
rewritten as GGUF here (gguf_from_llama2c.py) gives the llama2.c file's outputs."""

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
    # kvscope's one name per family, whatever the format (HF's gemma3_text is gemma3).
    assert c["arch"] == {"gemma3_text": "gemma3"}.get(family, family)
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


def test_a_gguf_file_gives_the_llama2c_checkpoints_outputs(tmp_path):
    import gguf_from_llama2c
    g = gguf_from_llama2c.write_gguf(STORIES, STORIES.parent / "tok512.bin",
                                     tmp_path / "stories260K.gguf")
    a = kvscope.load(STORIES, threads=1)
    b = kvscope.load(g, threads=1)
    assert b.config["format"] == "gguf" and b.config["n_kv_heads"] == 4
    text = "Once upon a time, there was a little girl named Lily."
    assert b.tokenize(text) == a.tokenize(text)
    ids = a.tokenize(text)
    la, ca = a.run_with_cache(ids)
    lb, cb = b.run_with_cache(ids)
    # The same f32 weights through two loaders: equal up to float rounding (1e-5 relative).
    np.testing.assert_allclose(lb, la, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cb["v"], ca["v"], rtol=1e-5, atol=1e-6)
    # kvscope reads a GGUF's Q and K rows back into Hugging Face's rotate-half order (channel
    # j * hd/2 + i holds the pair member j of pair i), llama2.c keeps them interleaved (2i + j):
    # the same numbers in another order, before RoPE and after it.
    hd = a.config["head_dim"]
    perm = [2 * i + j for j in (0, 1) for i in range(hd // 2)]
    for n in ("q", "k_pre_rope", "k"):
        np.testing.assert_allclose(cb[n], ca[n][..., perm], rtol=1e-5, atol=1e-5)
