// GGUF conversions of Hugging Face checkpoints (llama, qwen2, qwen3, phi3), written by this test
// the way llama.cpp's converter lays them out (tensor names, dims ne0-first, the llama
// Q/K row permutation, no output.weight when tied): loaded through load_model they must
// give the Hugging Face model's logits and K before/after RoPE to 1e-5 when stored as F32,
// and equal the model rebuilt from their dequantized weights to 1e-5 when stored as Q8_0
// (and stay within Q8_0's error of the original).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>

#include "gguf_writer.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "reference_model.hpp"
#include "capture_observer.hpp"
#include "test_util.hpp"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

using Grab = test::CaptureQKV;

struct Run {
  std::vector<float> logits;
  Grab g;
};

Run run(const Model& m) {
  std::vector<int32_t> toks;
  for (int i = 0; i < 24; ++i) toks.push_back(int32_t((i * 13 + 5) % m.config.vocab_size));
  Run r;
  RunState s(m.config, 32);
  ForwardOptions o;
  o.observer = &r.g;
  const auto lg = forward(m, s, toks, o);
  r.logits.assign(lg.begin(), lg.end());
  return r;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  const std::vector<double> bd(b.begin(), b.end());
  return test::rel_error(a.data(), bd.data(), bd.size());
}

// Q8_0 by hand: per 32 values d = max|x| / 127 (stored as a half), q = round(x / d).
std::string quantize_q8_0(const std::vector<float>& x, std::vector<float>* dequant) {
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
std::vector<float> permute_rows(const std::vector<float>& w, int64_t rows, int64_t cols, int hd) {
  std::vector<float> out(w.size());
  for (int64_t h0 = 0; h0 < rows; h0 += hd)
    for (int s = 0; s < 2; ++s)
      for (int i = 0; i < hd / 2; ++i)
        std::copy(w.begin() + (h0 + s * hd / 2 + i) * cols, w.begin() + (h0 + s * hd / 2 + i + 1) * cols,
                  out.begin() + (h0 + 2 * i + s) * cols);
  return out;
}

// Writes `hf` as GGUF; matrices as F32 or Q8_0 (1-D tensors stay F32, as llama.cpp keeps
// them). `deq` receives the model whose matrices are the dequantized stored values.
void write_gguf(const fs::path& file, const Model& hf, bool q8, Model* deq,
                const std::function<void(test::GgufWriter&)>& extra = {}) {
  const ModelConfig& c = hf.config;
  const std::string a = c.arch == "llama" ? "llama" : c.arch;
  test::GgufWriter w;
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
  w.u32(a + ".rope.dimension_count", uint32_t(c.rot_dim()));
  if (c.sliding_window > 0) w.u32(a + ".attention.sliding_window", uint32_t(c.sliding_window));
  w.f32(a + ".attention.layer_norm_rms_epsilon", c.norm_eps);
  w.f32(a + ".rope.freq_base", c.rope_theta);
  w.u32("tokenizer.ggml.bos_token_id", uint32_t(c.bos_id));
  w.u32("tokenizer.ggml.eos_token_id", uint32_t(c.eos_id));
  w.u32("general.quantization_version", 2);
  *deq = hf;
  auto mat = [&](const std::string& name, const Tensor& t, Tensor* dst, bool perm) {
    std::vector<float> x = t.to_f32();
    if (perm) x = permute_rows(x, t.rows, t.cols, c.head_dim);
    std::vector<float> back = x;
    std::string bytes = q8 ? quantize_q8_0(x, &back)
                           : std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4);
    w.tensor(name, {uint64_t(t.cols), uint64_t(t.rows)}, q8 ? 8 : 0, bytes);
    if (perm) {  // back to Hugging Face's order for the dequantized twin
      std::vector<float> un(back.size());
      for (int64_t h0 = 0; h0 < t.rows; h0 += c.head_dim)
        for (int s = 0; s < 2; ++s)
          for (int i = 0; i < c.head_dim / 2; ++i)
            std::copy(back.begin() + (h0 + 2 * i + s) * t.cols, back.begin() + (h0 + 2 * i + s + 1) * t.cols,
                      un.begin() + (h0 + s * c.head_dim / 2 + i) * t.cols);
      back = un;
    }
    *dst = make_tensor(t.name, t.rows, t.cols, back);
  };
  auto vec = [&](const std::string& name, const Tensor& t) {
    const std::vector<float> x = t.to_f32();
    w.tensor(name, {uint64_t(t.numel())}, 0, std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4));
  };
  mat("token_embd.weight", hf.weights.tok_embedding, &deq->weights.tok_embedding, false);
  if (!c.tied_embeddings) mat("output.weight", hf.weights.classifier, &deq->weights.classifier, false);
  else deq->weights.classifier = deq->weights.tok_embedding;
  vec("output_norm.weight", hf.weights.final_norm);
  const bool perm = c.arch == "llama";
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
    if (c.arch == "phi3") {
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
  test::write_bytes(file, w.bytes());
}

}  // namespace

TEST_CASE("GGUF conversions of llama, qwen2, qwen3 and phi3 checkpoints compute the HF model",
          "[gguf][loaders][forward]") {
  for (const char* arch : {"llama", "qwen2", "qwen3", "phi3"}) {
    INFO(arch);
    SyntheticSpec spec;
    ModelConfig& c = spec.config;
    c.arch = arch;
    c.dim = 64, c.hidden_dim = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.head_dim = 16, c.vocab_size = 67, c.max_seq_len = 64, c.rope_theta = 10000.0f;
    c.qkv_bias = std::string(arch) == "qwen2";
    c.qk_norm = std::string(arch) == "qwen3";
    c.tied_embeddings = std::string(arch) != "llama";
    if (std::string(arch) == "phi3") {  // partial rotary (12 of 16) and a 7-token window
      c.rotary_dim = 12;
      c.sliding_window = 7;
      c.tied_embeddings = false;
    }
    test::TempDir d("gguf_model");
    write_synthetic_hf_model(d.path / "hf", spec);
    const Model hf = load_model(d.path / "hf");
    const Run want = run(hf);

    Model deq;
    write_gguf(d.path / "f32.gguf", hf, false, &deq);
    const Model g32 = load_model(d.path / "f32.gguf");
    CHECK(g32.format == "gguf");
    CHECK(g32.config.tied_embeddings == hf.config.tied_embeddings);
    const Run r32 = run(g32);
    CHECK(rel(r32.logits, want.logits) < 1e-5);
    for (int l = 0; l < c.n_layers; ++l) {
      CHECK(rel(r32.g.kpre[size_t(l)], want.g.kpre[size_t(l)]) < 1e-5);  // the un-permuted
      CHECK(rel(r32.g.k[size_t(l)], want.g.k[size_t(l)]) < 1e-5);        // Hugging Face keys
    }

    write_gguf(d.path / "q8.gguf", hf, true, &deq);
    Model g8 = load_model(d.path / "q8.gguf", LoadOptions{0});  // stays quantized in the map
    CHECK(g8.weights.layers[0].wq.dtype == DType::Q8_0);
    // What manifests and dumps record: 7 matrices per layer plus embedding (and head).
    CHECK(g8.quantized());
    // Counted per weight the model uses (phi3's fused tensors as their q/k/v, gate/up parts).
    CHECK(g8.stored_dtypes.at("Q8_0") == 7 * c.n_layers + (c.tied_embeddings ? 1 : 2));
    CHECK_FALSE(g32.quantized());
    const Run r8 = run(g8), rd = run(deq);
    CHECK(rel(r8.logits, rd.logits) < 1e-5);
    CHECK(rel(r8.g.k[1], rd.g.k[1]) < 1e-5);
    const double q_err = rel(r8.logits, want.logits);
    CHECK(q_err > 1e-6);  // quantization did move them...
    CHECK(q_err < 2e-2);  // ...by Q8_0's error (8-bit, per-32 scales)
  }
}

TEST_CASE("GGUF metadata, tensors and architectures kvscope does not compute with are refused",
          "[gguf][loaders][hardening]") {
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.dim = 32, c.hidden_dim = 64, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 2;
  c.head_dim = 16, c.vocab_size = 40, c.max_seq_len = 32;
  test::TempDir d("gguf_refused");
  write_synthetic_hf_model(d.path / "hf", spec);
  const Model hf = load_model(d.path / "hf");
  Model deq;
  const fs::path p = d.path / "m.gguf";
  write_gguf(p, hf, false, &deq, [](test::GgufWriter& w) { w.u32("llama.expert_count", 8); });
  CHECK_THROWS_WITH(load_model(p), Catch::Contains("m.gguf") &&
                                       Catch::Contains("metadata 'llama.expert_count' = 8"));
  write_gguf(p, hf, false, &deq, [](test::GgufWriter& w) {
    w.tensor("rope_freqs.weight", {8}, 0, std::string(32, '\0'));
  });
  CHECK_THROWS_WITH(load_model(p), Catch::Contains("tensor 'rope_freqs.weight' is not used"));
  test::GgufWriter g;
  g.str("general.architecture", "gemma2");
  test::write_bytes(p, g.bytes());
  CHECK_THROWS_WITH(load_model(p), Catch::Contains("GGUF architecture 'gemma2' is not supported"));
}
