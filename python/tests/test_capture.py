"""run_with_cache against `kvscope dump` (the same ids must give the same bits) and against
attention recomputed here in numpy from the captured Q, K and V."""

import h5py
import numpy as np
import pytest

import kvscope
from conftest import STORIES, TINY, VALID, cli

NAMES = ("q", "k_pre_rope", "k", "v", "attn_out")


@pytest.mark.parametrize("model", [STORIES, TINY], ids=["llama2c", "hf"])
def test_run_with_cache_equals_the_dump_bit_for_bit(model, tmp_path):
    out = tmp_path / "d.h5"
    cli("dump", "--model", model, "--text", VALID, "--doc-separator", "<|endoftext|>",
        "--seq-len", 48, "--n-seq", 2, "--tensors", ",".join(NAMES), "--logits",
        "--threads", 1, "--quiet", "--out", out)
    m = kvscope.load(model, threads=1)
    L = m.config["n_layers"]
    with h5py.File(out, "r") as f:
        tokens = f["tokens"][:]
        for s in range(tokens.shape[0]):
            logits, cache = m.run_with_cache(tokens[s], names=NAMES)
            assert np.array_equal(logits, f["logits"][s]), "logits differ from the dump"
            for name in NAMES:
                got = cache[name]
                assert got.dtype == np.float32 and got.shape[0] == L
                for l in range(L):
                    want = f[f"layer_{l:02d}/{name}"][s]
                    assert got[l].shape == want.shape, name
                    assert np.array_equal(got[l], want), f"{name} of layer {l} differs"


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def test_pattern_and_attn_out_match_attention_recomputed_from_q_k_v():
    m = kvscope.load(STORIES, threads=1)
    c = m.config
    ids = m.tokenize(VALID.read_text()[:400])[:40]
    _, cache = m.run_with_cache(ids, names=("q", "k", "v", "attn_out", "pattern"))
    T, group = len(ids), c["n_heads"] // c["n_kv_heads"]
    causal = np.tril(np.ones((T, T), dtype=bool))
    for l in range(c["n_layers"]):
        for h in range(c["n_heads"]):
            q = cache["q"][l, h].astype(np.float64)
            k = cache["k"][l, h // group].astype(np.float64)   # GQA: query head h reads h // group
            v = cache["v"][l, h // group].astype(np.float64)
            s = q @ k.T / np.sqrt(c["head_dim"])
            p = softmax(np.where(causal, s, -np.inf))
            # Tolerance: float32 scores against these float64 ones.
            np.testing.assert_allclose(cache["pattern"][l, h], p, atol=2e-6, rtol=0)
            np.testing.assert_allclose(cache["attn_out"][l, h], p @ v, atol=2e-5, rtol=1e-4)
    assert np.all(cache["pattern"][:, :, ~causal] == 0)


def test_layers_and_names_select_what_comes_back():
    m = kvscope.load(STORIES, threads=1)
    ids = m.tokenize("Once upon a time there was a cat")
    logits, full = m.run_with_cache(ids)
    assert set(full) == {"q", "k_pre_rope", "k", "v"}
    assert logits.shape == (len(ids), m.config["vocab_size"])
    _, some = m.run_with_cache(ids, names=["v"], layers=[3, 0])
    assert set(some) == {"v"}
    assert np.array_equal(some["v"][0], full["v"][3])
    assert np.array_equal(some["v"][1], full["v"][0])


def test_numpy_ids_and_list_ids_agree():
    m = kvscope.load(STORIES, threads=1)
    ids = m.tokenize("The sun was warm")
    a, _ = m.run_with_cache(ids, names=())
    b, _ = m.run_with_cache(np.array(ids, dtype=np.int32), names=())
    assert np.array_equal(a, b)


def test_rope_changes_keys_but_not_their_norms():
    # RoPE rotates pairs of channels: each key's norm survives it, the key itself does not
    # (beyond position 0).
    m = kvscope.load(STORIES, threads=1)
    _, c = m.run_with_cache(m.tokenize("One day a little girl went to the park"),
                            names=("k_pre_rope", "k"))
    pre, post = c["k_pre_rope"], c["k"]
    np.testing.assert_allclose(np.linalg.norm(pre, axis=-1), np.linalg.norm(post, axis=-1),
                               rtol=1e-5)
    assert np.array_equal(pre[:, :, 0], post[:, :, 0])
    assert not np.allclose(pre[:, :, 1:], post[:, :, 1:])
