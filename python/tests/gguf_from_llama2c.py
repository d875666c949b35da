"""A llama2.c checkpoint and its tokenizer.bin rewritten as a GGUF file (version 3, F32
tensors, architecture llama, a SentencePiece-style `llama` vocabulary), written here from
the file formats' specs (llama2.c's run.c; ggml's docs/gguf.md), not by kvscope. Both use
Meta's interleaved RoPE layout, so the tensors go over unpermuted."""

import struct

import numpy as np

GGUF_U32, GGUF_I32, GGUF_F32, GGUF_STR, GGUF_ARR = 4, 5, 6, 8, 9
ALIGN = 32


def read_llama2c(path):
    raw = open(path, "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, ctx = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // heads
    f = np.frombuffer(raw, dtype="<f4", offset=28)
    at = 0

    def take(*shape):
        nonlocal at
        n = int(np.prod(shape))
        a = f[at:at + n].reshape(shape)
        at += n
        return a

    w = {"emb": take(vocab, dim), "att_norm": take(layers, dim),
         "wq": take(layers, heads * hd, dim), "wk": take(layers, kv_heads * hd, dim),
         "wv": take(layers, kv_heads * hd, dim), "wo": take(layers, dim, heads * hd),
         "ffn_norm": take(layers, dim), "w1": take(layers, hidden, dim),
         "w2": take(layers, dim, hidden), "w3": take(layers, hidden, dim),
         "norm": take(dim)}
    take(ctx, hd // 2)  # freq_cis_real
    take(ctx, hd // 2)  # freq_cis_imag
    w["out"] = w["emb"] if shared else take(vocab, dim)
    shape = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                 vocab=vocab, ctx=ctx)
    return shape, w


def read_tokenizer_bin(path, vocab):
    raw = open(path, "rb").read()
    at, tokens, scores = 4, [], []  # int max_token_length first
    for _ in range(vocab):
        score, n = struct.unpack_from("<fi", raw, at)
        at += 8
        tokens.append(raw[at:at + n].decode("utf-8", errors="replace"))
        scores.append(score)
        at += n
    return tokens, scores


def _str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _kv(key, kind, value):
    out = _str(key) + struct.pack("<I", kind)
    if kind == GGUF_STR:
        return out + _str(value)
    if kind == GGUF_ARR:
        elem, items = value
        out += struct.pack("<IQ", elem, len(items))
        if elem == GGUF_STR:
            return out + b"".join(_str(x) for x in items)
        return out + np.asarray(items, dtype="<f4" if elem == GGUF_F32 else "<i4").tobytes()
    return out + struct.pack({GGUF_U32: "<I", GGUF_I32: "<i", GGUF_F32: "<f"}[kind], value)


def write_gguf(model_bin, tokenizer_bin, out):
    s, w = read_llama2c(model_bin)
    tokens, scores = read_tokenizer_bin(tokenizer_bin, s["vocab"])
    # <unk> unknown (2), <s> and </s> control (3), <0xNN> bytes (6), the rest normal (1).
    types = [2 if i == 0 else 3 if i in (1, 2) else 6 if t.startswith("<0x") else 1
             for i, t in enumerate(tokens)]
    # llama2.c's export wrote SentencePiece's "\u2581" as a space; GGUF keeps the piece.
    tokens = [t.replace(" ", "\u2581") if k == 1 else t for t, k in zip(tokens, types)]
    a = "llama."
    kvs = [_kv("general.architecture", GGUF_STR, "llama"),
           _kv(a + "context_length", GGUF_U32, s["ctx"]),
           _kv(a + "embedding_length", GGUF_U32, s["dim"]),
           _kv(a + "block_count", GGUF_U32, s["layers"]),
           _kv(a + "feed_forward_length", GGUF_U32, s["hidden"]),
           _kv(a + "attention.head_count", GGUF_U32, s["heads"]),
           _kv(a + "attention.head_count_kv", GGUF_U32, s["kv_heads"]),
           _kv(a + "attention.layer_norm_rms_epsilon", GGUF_F32, 1e-5),
           _kv(a + "rope.freq_base", GGUF_F32, 10000.0),
           _kv(a + "rope.dimension_count", GGUF_U32, s["dim"] // s["heads"]),
           _kv("tokenizer.ggml.model", GGUF_STR, "llama"),
           _kv("tokenizer.ggml.tokens", GGUF_ARR, (GGUF_STR, tokens)),
           _kv("tokenizer.ggml.scores", GGUF_ARR, (GGUF_F32, scores)),
           _kv("tokenizer.ggml.token_type", GGUF_ARR, (GGUF_I32, types)),
           _kv("tokenizer.ggml.bos_token_id", GGUF_U32, 1),
           _kv("tokenizer.ggml.eos_token_id", GGUF_U32, 2),
           _kv("tokenizer.ggml.unknown_token_id", GGUF_U32, 0)]
    tensors = [("token_embd.weight", w["emb"]), ("output_norm.weight", w["norm"]),
               ("output.weight", w["out"])]
    for l in range(s["layers"]):
        p = f"blk.{l}."
        tensors += [(p + "attn_norm.weight", w["att_norm"][l]), (p + "attn_q.weight", w["wq"][l]),
                    (p + "attn_k.weight", w["wk"][l]), (p + "attn_v.weight", w["wv"][l]),
                    (p + "attn_output.weight", w["wo"][l]),
                    (p + "ffn_norm.weight", w["ffn_norm"][l]), (p + "ffn_gate.weight", w["w1"][l]),
                    (p + "ffn_down.weight", w["w2"][l]), (p + "ffn_up.weight", w["w3"][l])]
    infos, blobs, offset = [], [], 0
    for name, t in tensors:
        dims = list(reversed(t.shape))  # ggml: ne[0] is the row length
        infos.append(_str(name) + struct.pack("<I", len(dims)) +
                     struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", 0, offset))
        b = np.ascontiguousarray(t, dtype="<f4").tobytes()
        b += b"\0" * (-len(b) % ALIGN)
        blobs.append(b)
        offset += len(b)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += b"\0" * (-len(head) % ALIGN)
    with open(out, "wb") as f:
        f.write(head)
        for b in blobs:
            f.write(b)
    return out
