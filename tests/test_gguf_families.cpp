// GGUF conversions of Gemma 2, Gemma 3, Llama 3.1-scaled and longrope Phi-3 checkpoints
// (tests/gguf_convert.hpp: norms stored as 1 + w, rope_freqs.weight, rope_factors_*) must
// compute what the Hugging Face checkpoint computes (kvscope's Hugging Face path, itself
// checked against tests/reference_hf.cpp in test_families.cpp): logits, K before and after
// RoPE and V to 1e-5 relative L2 when stored as F32, prefill and cached decoding through
// the windows. Where llama.cpp's reading of a GGUF is not the checkpoint's (the Gemma query
// scale is not stored), the test states llama.cpp's rule and checks kvscope follows it.
#include <catch2/catch.hpp>

#include "capture_observer.hpp"
#include "gguf_convert.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

struct Run {
  std::vector<float> logits;  // [T, vocab]
  test::CaptureQKV g;
};

Run run(const Model& m, int T) {
  std::vector<int32_t> toks;
  for (int i = 0; i < T; ++i) toks.push_back(int32_t((i * 13 + 5) % m.config.vocab_size));
  Run r;
  RunState s(m.config, T + 4);
  ForwardOptions o;
  o.observer = &r.g;
  const auto lg = forward(m, s, toks, o);
  r.logits.assign(lg.begin(), lg.end());
  return r;
}

// Token by token through the cache (windowed layers trimmed after each call): the last
// token's logits.
std::vector<float> decode(const Model& m, int T) {
  RunState s(m.config, T + 4);
  std::vector<float> last;
  for (int i = 0; i < T; ++i) {
    const int32_t t = int32_t((i * 13 + 5) % m.config.vocab_size);
    const auto lg = forward(m, s, std::vector<int32_t>{t});
    last.assign(lg.begin(), lg.end());
  }
  return last;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  const std::vector<double> bd(b.begin(), b.end());
  return test::rel_error(a.data(), bd.data(), bd.size());
}

// The GGUF of `spec`'s checkpoint equals it: every captured tensor and the logits, in one
// prefill of T tokens and (last logits) token by token.
void check_conversion(const SyntheticSpec& spec, int T, const char* tag) {
  test::TempDir d(tag);
  write_synthetic_hf_model(d.path / "hf", spec);
  const Model hf = load_model(d.path / "hf");
  Model twin;
  test::write_gguf(d.path / "m.gguf", hf, false, &twin);
  const Model g = load_model(d.path / "m.gguf");
  // One family, one name, whichever format it came from (model/family.hpp).
  CHECK(g.config.family == spec.config.family);
  CHECK(hf.config.family == spec.config.family);
  const Run want = run(hf, T), got = run(g, T);
  CHECK(rel(got.logits, want.logits) < 1e-5);
  for (int l = 0; l < hf.config.n_layers; ++l) {
    INFO("layer " << l);
    CHECK(rel(got.g.q[size_t(l)], want.g.q[size_t(l)]) < 1e-5);
    CHECK(rel(got.g.kpre[size_t(l)], want.g.kpre[size_t(l)]) < 1e-5);
    CHECK(rel(got.g.k[size_t(l)], want.g.k[size_t(l)]) < 1e-5);
    CHECK(rel(got.g.v[size_t(l)], want.g.v[size_t(l)]) < 1e-5);
  }
  CHECK(rel(decode(g, T), decode(hf, T)) < 1e-5);
}

ModelConfig gemma(const std::string& arch, int layers) {
  ModelConfig c;
  c.family = *family_from_name(arch);
  c.dim = 32, c.hidden_dim = 64, c.n_layers = layers, c.n_heads = 4, c.n_kv_heads = 2;
  c.head_dim = 16, c.vocab_size = 61, c.max_seq_len = 64, c.tied_embeddings = true;
  c.norm_offset = 1.0f, c.sandwich_norms = true, c.mlp_act = MlpActivation::kGeluTanh;
  c.embed_scale = std::sqrt(32.0f);
  c.attn_scale = 0.25f;  // query_pre_attn_scalar = head_dim, as gemma-2-2b/9b, gemma-3-1b/4b/12b
  c.norm_eps = 1e-6f;
  c.rope_theta = 10000.0f;
  c.sliding_window = 5;
  const int pattern = arch == "gemma2" ? 2 : 6;
  for (int l = 0; l < layers; ++l) c.sliding_layers.push_back(l % pattern != pattern - 1);
  if (arch == "gemma3_text") {
    c.qk_norm = true;
    c.rope_theta = 1e6f;
    c.rope_local_theta = 10000.0f;
    c.rope_scaling.kind = RopeScalingKind::kLinear;  // global layers only
    c.rope_scaling.factor = 8.0;
  } else {
    c.attn_softcap = 2.0f, c.final_softcap = 3.0f;  // small, so that the caps bite
  }
  return c;
}

}  // namespace

TEST_CASE("gemma2 GGUF: 1 + w norms, soft-caps, alternating windows equal the checkpoint",
          "[gguf][families][forward]") {
  SyntheticSpec spec;
  spec.config = gemma("gemma2", 3);
  spec.seed = 11;
  check_conversion(spec, 20, "gguf_gemma2");
}

TEST_CASE("gemma2 GGUF without window and cap keys takes llama.cpp's defaults 4096, 50, 30",
          "[gguf][families][forward]") {
  SyntheticSpec spec;
  spec.config = gemma("gemma2", 2);
  spec.config.sliding_window = 4096;
  spec.config.attn_softcap = 50.0f, spec.config.final_softcap = 30.0f;
  spec.seed = 15;
  test::TempDir d("gguf_gemma2_defaults");
  write_synthetic_hf_model(d.path / "hf", spec);
  const Model hf = load_model(d.path / "hf");
  Model keyless = hf, twin;  // the same weights; write_gguf writes no key for a 0
  keyless.config.attn_softcap = keyless.config.final_softcap = 0.0f;
  keyless.config.sliding_window = 0;
  test::write_gguf(d.path / "m.gguf", keyless, false, &twin);
  const Model g = load_model(d.path / "m.gguf");
  CHECK(g.config.sliding_window == 4096);
  CHECK(g.config.window_of(0) == 4096);
  CHECK(g.config.window_of(1) == 0);
  CHECK(g.config.attn_softcap == 50.0f);
  CHECK(g.config.final_softcap == 30.0f);
  CHECK(rel(run(g, 12).logits, run(hf, 12).logits) < 1e-5);
}

TEST_CASE(
    "gemma3 GGUF: q/k norms, local base 10000 on 5 of 6 layers, linear scaling on the "
    "global ones",
    "[gguf][families][forward]") {
  SyntheticSpec spec;
  spec.config = gemma("gemma3_text", 7);  // layers 0-4 and 6 sliding, 5 global
  spec.seed = 12;
  check_conversion(spec, 20, "gguf_gemma3");
}

TEST_CASE("Gemma GGUF query scale is llama.cpp's: 1/sqrt(head_dim), 1/sqrt(dim/heads) for 27B",
          "[gguf][families]") {
  // gemma-2-27b (46 layers) and gemma-3-27b (62) have query_pre_attn_scalar = dim/heads,
  // which the converter does not store; llama.cpp knows them by their layer count.
  for (const auto& [arch, layers] :
       {std::pair{"gemma2", 46}, std::pair{"gemma3_text", 62}, std::pair{"gemma2", 3}}) {
    INFO(arch << " " << layers);
    SyntheticSpec spec;
    spec.config = gemma(arch, layers);
    spec.config.dim = spec.config.hidden_dim = 16;
    spec.config.embed_scale = 4.0f;
    spec.config.n_heads = 2, spec.config.n_kv_heads = 1, spec.config.head_dim = 8;
    spec.config.vocab_size = 8;
    test::TempDir d("gguf_gemma_scale");
    write_synthetic_hf_model(d.path / "hf", spec);
    Model twin;
    test::write_gguf(d.path / "m.gguf", load_model(d.path / "hf"), false, &twin);
    const Model g = load_model(d.path / "m.gguf");
    const bool big = layers > 40;
    CHECK(g.config.attn_scale == Approx(1.0 / std::sqrt(big ? 16.0 / 2 : 8.0)).epsilon(1e-7));
    CHECK(g.config.norm_offset == 0.0f);
    // transformers' rule: layer l is global when (l + 1) % pattern == 0 (2 or 6).
    const int pattern = std::string(arch) == "gemma2" ? 2 : 6;
    for (int l = 0; l < layers; ++l) CHECK(g.config.window_of(l) == ((l + 1) % pattern ? 5 : 0));
  }
}

TEST_CASE("llama GGUF with rope_freqs.weight computes Llama 3.1's rope_scaling",
          "[gguf][families][forward]") {
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.dim = 64, c.hidden_dim = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
  c.head_dim = 16, c.vocab_size = 67, c.max_seq_len = 64, c.rope_theta = 10000.0f;
  // Wavelengths of head_dim 16 and base 1e4 run from 6.3 to 2e4: with original 64 and
  // factors 1 / 4 some frequencies are kept (< 16), some slowed 8x (> 64), some between.
  c.rope_scaling.kind = RopeScalingKind::kLlama3;
  c.rope_scaling.factor = 8.0, c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0, c.rope_scaling.original_max_position = 64;
  spec.seed = 13;
  const std::vector<float> f = test::llama3_rope_freqs(c);
  CHECK(*std::min_element(f.begin(), f.end()) == 1.0f);
  CHECK(*std::max_element(f.begin(), f.end()) == 8.0f);
  CHECK(std::count_if(f.begin(), f.end(), [](float v) { return v > 1 && v < 8; }) >= 1);
  check_conversion(spec, 24, "gguf_llama31");
}

TEST_CASE("phi3 GGUF with rope_factors_long/short computes longrope, short and long calls",
          "[gguf][families][forward]") {
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.family = Family::kPhi3;
  c.dim = 64, c.hidden_dim = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 4;
  c.head_dim = 16, c.rotary_dim = 12, c.vocab_size = 67, c.max_seq_len = 64;
  c.rope_scaling.kind = RopeScalingKind::kLongrope;
  c.rope_scaling.original_max_position = 16;
  c.rope_scaling.short_factor = {1.0, 1.1, 1.3, 1.6, 2.0, 2.5};
  c.rope_scaling.long_factor = {1.0, 1.5, 3.0, 6.0, 12.0, 24.0};
  c.rope_scaling.attention_factor =
      std::sqrt(1 + std::log(64.0 / 16) / std::log(16.0));  // what config.json leaves out
  spec.seed = 14;
  check_conversion(spec, 12, "gguf_phi3_short");  // 12 <= 16: short factors
  check_conversion(spec, 24, "gguf_phi3_long");   // 24 > 16: long factors
}
