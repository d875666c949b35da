"""Random-weight Hugging Face checkpoints of every family kvscope loads, written here in
numpy (not by kvscope's own synthetic writer), under config.json files that carry the
real models' fields, shrunk: Llama-2, Mistral-7B-v0.1, Qwen2.5, Qwen3, Gemma-2, Gemma-3
(text) and Phi-3-mini. The tokenizer is tests/data/tokenizers/metaspace_first (273 ids;
<unk> 0, <s> 1, </s> 2), so every vocabulary here is 288."""

import json
import pathlib
import shutil
import struct

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "tests" / "data" / "tokenizers" / "metaspace_first"
VOCAB, DIM, HIDDEN, LAYERS, HEADS, HEAD_DIM = 288, 32, 64, 3, 4, 8

COMMON = {"bos_token_id": 1, "eos_token_id": 2, "hidden_size": DIM, "intermediate_size": HIDDEN,
          "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "vocab_size": VOCAB,
          "initializer_range": 0.02, "use_cache": True, "torch_dtype": "float32",
          "attention_dropout": 0.0}

CONFIGS = {
    "llama": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "num_key_value_heads": HEADS, "max_position_embeddings": 4096,
              "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": None,
              "tie_word_embeddings": False, "pretraining_tp": 1, "attention_bias": False,
              "mlp_bias": False, "transformers_version": "4.31.0.dev0"},
    "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                "hidden_act": "silu", "num_key_value_heads": 2,
                "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
                "sliding_window": 6, "tie_word_embeddings": False,
                "transformers_version": "4.34.0.dev0"},
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
              "num_key_value_heads": 2, "max_position_embeddings": 32768,
              "max_window_layers": 28, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
              "sliding_window": 131072, "use_sliding_window": False,
              "tie_word_embeddings": True, "transformers_version": "4.43.1"},
    "qwen3": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
              "num_key_value_heads": 2, "head_dim": HEAD_DIM, "max_position_embeddings": 40960,
              "max_window_layers": 36, "rms_norm_eps": 1e-06, "rope_theta": 1000000,
              "rope_scaling": None, "sliding_window": None, "use_sliding_window": False,
              "attention_bias": False, "tie_word_embeddings": False,
              "transformers_version": "4.51.0"},
    "gemma2": {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
               "attention_bias": False, "attn_logit_softcapping": 50.0,
               "cache_implementation": "hybrid", "final_logit_softcapping": 30.0,
               "head_dim": HEAD_DIM, "hidden_act": "gelu_pytorch_tanh",
               "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 8192,
               "num_key_value_heads": 2, "pad_token_id": 0, "query_pre_attn_scalar": 8,
               "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 6,
               "transformers_version": "4.42.4"},
    "gemma3_text": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
                    "attention_bias": False, "attn_logit_softcapping": None,
                    "cache_implementation": "hybrid", "final_logit_softcapping": None,
                    "head_dim": HEAD_DIM, "hidden_activation": "gelu_pytorch_tanh",
                    "max_position_embeddings": 32768, "num_key_value_heads": 1,
                    "pad_token_id": 0, "query_pre_attn_scalar": 8, "rms_norm_eps": 1e-06,
                    "rope_local_base_freq": 10000, "rope_scaling": None, "rope_theta": 1000000,
                    "sliding_window": 5, "sliding_window_pattern": 3,
                    "transformers_version": "4.50.0.dev0"},
    "phi3": {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu",
             "attention_bias": False, "embd_pdrop": 0.0, "num_key_value_heads": HEADS,
             "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
             "pad_token_id": 0, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": None,
             "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": False,
             "transformers_version": "4.40.2"},
}
FAMILIES = list(CONFIGS)


def config(family: str) -> dict:
    return {**COMMON, **CONFIGS[family]}


def _tensors(family: str, c: dict, rng) -> dict:
    nkv = c["num_key_value_heads"]
    q, kv = HEADS * HEAD_DIM, nkv * HEAD_DIM
    gemma = family.startswith("gemma")

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):  # Gemma multiplies by (1 + w): weights near 0 there, near 1 elsewhere
        return ((0.0 if gemma else 1.0) + 0.1 * rng.standard_normal(n)).astype(np.float32)

    t = {"model.embed_tokens.weight": mat(VOCAB, DIM), "model.norm.weight": norm(DIM)}
    tied = c.get("tie_word_embeddings", gemma)
    if not tied:
        t["lm_head.weight"] = mat(VOCAB, DIM)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(DIM)
        t[p + "post_attention_layernorm.weight"] = norm(DIM)
        if gemma:
            t[p + "pre_feedforward_layernorm.weight"] = norm(DIM)
            t[p + "post_feedforward_layernorm.weight"] = norm(DIM)
        if family == "phi3":
            t[p + "self_attn.qkv_proj.weight"] = mat(q + 2 * kv, DIM)
            t[p + "mlp.gate_up_proj.weight"] = mat(2 * HIDDEN, DIM)
        else:
            t[p + "self_attn.q_proj.weight"] = mat(q, DIM)
            t[p + "self_attn.k_proj.weight"] = mat(kv, DIM)
            t[p + "self_attn.v_proj.weight"] = mat(kv, DIM)
            t[p + "mlp.gate_proj.weight"] = mat(HIDDEN, DIM)
            t[p + "mlp.up_proj.weight"] = mat(HIDDEN, DIM)
        t[p + "self_attn.o_proj.weight"] = mat(DIM, q)
        t[p + "mlp.down_proj.weight"] = mat(DIM, HIDDEN)
        if family == "qwen2":
            for n, rows in (("q", q), ("k", kv), ("v", kv)):
                t[p + f"self_attn.{n}_proj.bias"] = (0.1 * rng.standard_normal(rows)).astype(
                    np.float32)
        if family in ("qwen3", "gemma3_text"):
            t[p + "self_attn.q_norm.weight"] = norm(HEAD_DIM)
            t[p + "self_attn.k_norm.weight"] = norm(HEAD_DIM)
    return t


def write_safetensors(path: pathlib.Path, tensors: dict) -> None:
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write(family: str, out: pathlib.Path, seed: int = 1) -> pathlib.Path:
    """Writes config.json, model.safetensors and the tokenizer into out/ and returns it."""
    out.mkdir(parents=True, exist_ok=True)
    c = config(family)
    (out / "config.json").write_text(json.dumps(c, indent=2))
    write_safetensors(out / "model.safetensors",
                      _tensors(family, c, np.random.default_rng(seed)))
    for f in TOKENIZER.iterdir():
        shutil.copy(f, out / f.name)
    return out
