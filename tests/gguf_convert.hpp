// Test-only GGUF conversion of a loaded Hugging Face Model, laid out the way llama.cpp's
// convert_hf_to_gguf writes it (written from its conventions, independent of
// src/model/loader_gguf.cpp): tensor names, dims ne0-first, the llama Q/K row permutation,
// phi3's fused attn_qkv / ffn_up, Gemma's norms stored as 1 + w, no output.weight when tied,
// Llama 3.1 scaling as rope_freqs.weight, longrope as rope_factors_long/short.weight.
// Matrices as F32 or Q8_0 (1-D tensors stay F32, as llama.cpp keeps them); `deq` receives
// the model whose matrices are the dequantized stored values.
#pragma once

#include <cmath>
#include <functional>

#include "gguf_writer.hpp"
#include "kvscope/model/model.hpp"
#include "test_util.hpp"

namespace kvscope::test {

// Q8_0 by hand: per 32 values d = max|x| / 127 (stored as a half), q = round(x / d).
inline std::string quantize_q8_0(const std::vector<float>& x, std::vector<float>* dequant) {
  std::string out;
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[b + i]));
    const uint16_t h = f32_to_f16(amax / 127.0f);
    const float d = f16_to_f32(h);
    out.append(reinterpret_cast<const char*>(&h), 2);
    for (size_t i = 0; i < 32; ++i) {
      const int q = d == 0 ? 0 : int(std::lround(x[b + i] / d));
      out.push_back(char(int8_t(std::clamp(q, -127, 127))));
      (*dequant)[b + i] = d * float(std::clamp(q, -127, 127));
    }
  }
  return out;
}

// llama.cpp's convert_hf_to_gguf permute(): per head, rows reshaped (2, hd/2) and swapped,
// so stored row 2 i + s holds Hugging Face row s hd/2 + i.
inline std::vector<float> permute_rows(const std::vector<float>& w, int64_t rows, int64_t cols,
                                       int hd) {
  std::vector<float> out(w.size());
  for (int64_t h0 = 0; h0 < rows; h0 += hd)
    for (int s = 0; s < 2; ++s)
      for (int i = 0; i < hd / 2; ++i)
        std::copy(w.begin() + (h0 + s * hd / 2 + i) * cols,
                  w.begin() + (h0 + s * hd / 2 + i + 1) * cols,
                  out.begin() + (h0 + 2 * i + s) * cols);
  return out;
}

// permute_rows undone: stored row 2 i + s of a head is Hugging Face row s hd/2 + i.
inline std::vector<float> unpermute_rows(const std::vector<float>& w, int64_t rows, int64_t cols,
                                         int hd) {
  std::vector<float> out(w.size());
  for (int64_t h0 = 0; h0 < rows; h0 += hd)
    for (int s = 0; s < 2; ++s)
      for (int i = 0; i < hd / 2; ++i)
        std::copy(w.begin() + (h0 + 2 * i + s) * cols, w.begin() + (h0 + 2 * i + s + 1) * cols,
                  out.begin() + (h0 + s * hd / 2 + i) * cols);
  return out;
}

// The converter's Llama 3.1 rope_freqs: per inverse frequency f of theta^(-2i/d), the
// divisor 1 (short wavelengths), factor (long ones) or 1 / ((1 - s) / factor + s) between.
inline std::vector<float> llama3_rope_freqs(const ModelConfig& c) {
  const RopeScaling& rs = c.rope_scaling;
  const double low_wl = rs.original_max_position / rs.low_freq_factor;
  const double high_wl = rs.original_max_position / rs.high_freq_factor;
  std::vector<float> f;
  for (int i = 0; i < c.rot_dim() / 2; ++i) {
    const double freq = 1.0 / std::pow(double(c.rope_theta), 2.0 * i / c.rot_dim());
    const double wl = 2 * M_PI / freq;
    if (wl < high_wl)
      f.push_back(1.0f);
    else if (wl > low_wl)
      f.push_back(float(rs.factor));
    else {
      const double s = (rs.original_max_position / wl - rs.low_freq_factor) /
                       (rs.high_freq_factor - rs.low_freq_factor);
      f.push_back(float(1.0 / ((1 - s) / rs.factor + s)));
    }
  }
  return f;
}

inline std::string f32_bytes(const std::vector<float>& x) {
  return std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4);
}

// Stores a matrix its own way: given the name and shape, sets the ggml type id and the
// bytes (stored row order) and returns true; false: F32 / Q8_0 as asked.
using MatrixEncoder = std::function<bool(const std::string& name, int64_t rows, int64_t cols,
                                         uint32_t* type, std::string* bytes)>;

inline void write_gguf(const std::filesystem::path& file, const Model& hf, bool q8, Model* deq,
                       const std::function<void(GgufWriter&)>& extra = {},
                       const MatrixEncoder& encode = {}) {
  const ModelConfig& c = hf.config;
  const Family base = base_of(c.family);  // a registered family is written as its base
  const bool gemma = base == Family::kGemma2 || base == Family::kGemma3;
  const std::string a = *traits(c.family).gguf_arch ? traits(c.family).gguf_arch : "llama";
  GgufWriter w;
  w.str("general.architecture", a);
  w.str("general.name", "synthetic");
  w.u32("general.file_type", q8 ? 7 : 0);
  w.u32(a + ".context_length", uint32_t(c.max_seq_len));
  w.u32(a + ".embedding_length", uint32_t(c.dim));
  w.u32(a + ".block_count", uint32_t(c.n_layers));
  w.u32(a + ".feed_forward_length", uint32_t(c.hidden_dim));
  w.u32(a + ".attention.head_count", uint32_t(c.n_heads));
  w.u32(a + ".attention.head_count_kv", uint32_t(c.n_kv_heads));
  w.u32(a + ".attention.key_length", uint32_t(c.head_dim));
  w.u32(a + ".attention.value_length", uint32_t(c.head_dim));
  if (!gemma) w.u32(a + ".rope.dimension_count", uint32_t(c.rot_dim()));
  if (c.sliding_window > 0) w.u32(a + ".attention.sliding_window", uint32_t(c.sliding_window));
  if (c.attn_softcap > 0) w.f32(a + ".attn_logit_softcapping", c.attn_softcap);
  if (c.final_softcap > 0) w.f32(a + ".final_logit_softcapping", c.final_softcap);
  w.f32(a + ".attention.layer_norm_rms_epsilon", c.norm_eps);
  if (base != Family::kGemma2) w.f32(a + ".rope.freq_base", c.rope_theta);
  const RopeScaling& rs = c.rope_scaling;
  if (rs.kind == RopeScalingKind::kLinear) {
    w.str(a + ".rope.scaling.type", "linear");
    w.f32(a + ".rope.scaling.factor", float(rs.factor));
  }
  if (rs.kind == RopeScalingKind::kLongrope) {
    w.u32(a + ".rope.scaling.original_context_length", uint32_t(rs.original_max_position));
    const double scale = double(c.max_seq_len) / rs.original_max_position;
    w.f32(a + ".rope.scaling.attn_factor",
          float(scale <= 1 ? 1
                           : std::sqrt(1 + std::log(scale) / std::log(rs.original_max_position))));
  }
  w.u32("tokenizer.ggml.bos_token_id", uint32_t(c.bos_id));
  w.u32("tokenizer.ggml.eos_token_id", uint32_t(c.eos_id));
  w.u32("general.quantization_version", 2);
  *deq = hf;
  auto mat = [&](const std::string& name, const Tensor& t, Tensor* dst, bool perm) {
    uint32_t type = 0;
    std::string own;
    if (encode && encode(name, t.rows, t.cols, &type, &own)) {
      w.tensor(name, {uint64_t(t.cols), uint64_t(t.rows)}, type, own);
      return;  // no twin: the caller dequantizes what was stored
    }
    std::vector<float> x = t.to_f32();
    if (perm) x = permute_rows(x, t.rows, t.cols, c.head_dim);
    std::vector<float> back = x;
    std::string bytes = q8 ? quantize_q8_0(x, &back) : f32_bytes(x);
    w.tensor(name, {uint64_t(t.cols), uint64_t(t.rows)}, q8 ? 8 : 0, bytes);
    if (perm) back = unpermute_rows(back, t.rows, t.cols, c.head_dim);  // the twin: HF order
    *dst = make_tensor(t.name, t.rows, t.cols, back);
  };
  // 1-D tensors; Gemma's norms become 1 + w (and the twin keeps the (1 + w) config).
  auto vec = [&](const std::string& name, const Tensor& t) {
    std::vector<float> x = t.to_f32();
    if (gemma && name.size() > 11 && name.rfind("norm.weight") == name.size() - 11)
      for (float& v : x) v += 1.0f;
    w.tensor(name, {uint64_t(t.numel())}, 0, f32_bytes(x));
  };
  mat("token_embd.weight", hf.weights.tok_embedding, &deq->weights.tok_embedding, false);
  if (!c.tied_embeddings)
    mat("output.weight", hf.weights.classifier, &deq->weights.classifier, false);
  else
    deq->weights.classifier = deq->weights.tok_embedding;
  vec("output_norm.weight", hf.weights.final_norm);
  if (rs.kind == RopeScalingKind::kLlama3) {
    const std::vector<float> f = llama3_rope_freqs(c);
    w.tensor("rope_freqs.weight", {uint64_t(f.size())}, 0, f32_bytes(f));
  }
  if (rs.kind == RopeScalingKind::kLongrope) {
    for (const auto& [name, v] : {std::pair{"rope_factors_long.weight", &rs.long_factor},
                                  std::pair{"rope_factors_short.weight", &rs.short_factor}}) {
      const std::vector<float> f(v->begin(), v->end());
      w.tensor(name, {uint64_t(f.size())}, 0, f32_bytes(f));
    }
  }
  const bool perm = base == Family::kLlama;
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const LayerWeights& lw = hf.weights.layers[size_t(l)];
    LayerWeights& dw = deq->weights.layers[size_t(l)];
    vec(p + "attn_norm.weight", lw.attn_norm);
    // Rows of several tensors stacked into one (phi3's fused attn_qkv and ffn_up).
    auto stack = [](std::initializer_list<const Tensor*> parts) {
      std::vector<float> all;
      int64_t rows = 0;
      for (const Tensor* t : parts) {
        const std::vector<float> x = t->to_f32();
        all.insert(all.end(), x.begin(), x.end());
        rows += t->rows;
      }
      return make_tensor("stacked", rows, (*parts.begin())->cols, all);
    };
    if (base == Family::kPhi3) {
      Tensor qkv, gu;
      mat(p + "attn_qkv.weight", stack({&lw.wq, &lw.wk, &lw.wv}), &qkv, false);
      dw.wq = row_view(qkv, 0, c.q_dim(), "q");
      dw.wk = row_view(qkv, c.q_dim(), c.kv_dim(), "k");
      dw.wv = row_view(qkv, c.q_dim() + c.kv_dim(), c.kv_dim(), "v");
      mat(p + "ffn_up.weight", stack({&lw.w_gate, &lw.w_up}), &gu, false);
      dw.w_gate = row_view(gu, 0, c.hidden_dim, "gate");
      dw.w_up = row_view(gu, c.hidden_dim, c.hidden_dim, "up");
    } else {
      mat(p + "attn_q.weight", lw.wq, &dw.wq, perm);
      mat(p + "attn_k.weight", lw.wk, &dw.wk, perm);
      mat(p + "attn_v.weight", lw.wv, &dw.wv, false);
      mat(p + "ffn_gate.weight", lw.w_gate, &dw.w_gate, false);
      mat(p + "ffn_up.weight", lw.w_up, &dw.w_up, false);
    }
    mat(p + "attn_output.weight", lw.wo, &dw.wo, false);
    vec(p + "ffn_norm.weight", lw.ffn_norm);
    if (c.sandwich_norms) {
      vec(p + "post_attention_norm.weight", lw.post_attn_norm);
      vec(p + "post_ffw_norm.weight", lw.post_ffn_norm);
    }
    mat(p + "ffn_down.weight", lw.w_down, &dw.w_down, false);
    if (c.qkv_bias) {
      vec(p + "attn_q.bias", lw.bq);
      vec(p + "attn_k.bias", lw.bk);
      vec(p + "attn_v.bias", lw.bv);
    }
    if (c.qk_norm) {
      vec(p + "attn_q_norm.weight", lw.q_norm);
      vec(p + "attn_k_norm.weight", lw.k_norm);
    }
  }
  if (extra) extra(w);
  write_bytes(file, w.bytes());
}

}  // namespace kvscope::test
