// config.json of Hugging Face checkpoints: every key is either computed with or known to be
// inert; anything that would change the computation and is not implemented is refused by
// name (issue 15's "nothing is silently ignored"). Mistral's sliding window is computed
// exactly where it does not bite and refused where it would.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "capture_observer.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/kv/cache_policy.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

SyntheticSpec small_spec(const std::string& arch, int window) {
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.family = *family_from_name(arch);
  c.dim = 32;
  c.hidden_dim = 80;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 61;
  c.max_seq_len = 64;
  c.sliding_window = window;
  return spec;
}

json read_config(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  return json::parse(in);
}

void write_config(const fs::path& dir, const json& j) {
  test::write_bytes(dir / "config.json", j.dump(2));
}

// Every layer's Q, K before and after RoPE and V ([heads, T, head_dim] each), copied.
using Grab = test::CaptureQKV;

std::string load_error(const fs::path& dir) {
  try {
    load_model(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

}  // namespace

TEST_CASE("config.json keys that would change the computation are refused by name",
          "[loaders][hf_config]") {
  test::TempDir d("hf_config_keys");
  write_synthetic_hf_model(d.path, small_spec("llama", 0));
  const json base = read_config(d.path);
  REQUIRE(load_error(d.path) == "(loaded)");

  struct Case {
    const char* key;
    json value;
    const char* says;
  };
  const Case refused[] = {
      {"partial_rotary_factor", 0.5, "partial rotary"},
      {"quantization_config", json{{"quant_method", "gptq"}}, "quantized"},
      {"sliding_window", 16, "LlamaAttention ignores it"},  // a llama, not a mistral
      {"use_sliding_window", true, "does not implement it"},
      {"attn_logit_softcapping", 50.0, "does not implement it"},
      {"some_future_field", 1, "does not implement it"},
  };
  for (const Case& cs : refused) {
    INFO(cs.key);
    json j = base;
    j[cs.key] = cs.value;
    write_config(d.path, j);
    const std::string err = load_error(d.path);
    CHECK_THAT(err, Contains((d.path / "config.json").string()) &&
                        Contains(std::string("field '") + cs.key + "' = " + cs.value.dump()) &&
                        Contains(cs.says) && Contains("model_type 'llama'"));
  }
  // Inert keys and the "off" values of the features above load.
  json j = base;
  j["use_cache"] = true;
  j["attention_dropout"] = 0.0;
  j["pretraining_tp"] = 1;
  j["transformers_version"] = "4.45.0";
  j["sliding_window"] = nullptr;
  j["use_sliding_window"] = false;
  j["partial_rotary_factor"] = 1.0;
  write_config(d.path, j);
  CHECK(load_error(d.path) == "(loaded)");
}

TEST_CASE("mistral: sliding-window attention past the window, prefill and decoding",
          "[loaders][hf_config][forward]") {
  test::TempDir d("hf_mistral");
  const int W = 12;
  write_synthetic_hf_model(d.path, small_spec("mistral", W));
  const json j = read_config(d.path);
  REQUIRE(j["model_type"] == "mistral");
  REQUIRE(j["sliding_window"] == W);
  const Model m = load_model(d.path);
  CHECK(m.config.sliding_window == W);

  // 40 tokens, more than three windows: against the reference, which masks keys older
  // than W positions to -inf before its softmax.
  std::vector<int32_t> toks;
  for (int t = 0; t < 40; ++t) toks.push_back(int32_t((t * 17 + 5) % m.config.vocab_size));
  const test::ReferenceRun ref = test::reference_forward(m, toks);
  RunState s(m.config, 64);
  ForwardOptions small_blocks;
  small_blocks.query_block = 7;  // blocks that straddle the window's edge
  const auto logits = forward(m, s, toks, small_blocks);
  CHECK(test::rel_error(logits.data(), ref.logits.data(), ref.logits.size()) < 1e-4);
  // Token by token through the cache: the same logits.
  RunState inc(m.config, 64);
  std::vector<float> last;
  for (size_t t = 0; t < toks.size(); ++t) {
    const auto lg = forward(m, inc, std::span<const int32_t>(&toks[t], 1));
    CHECK(test::rel_error(lg.data(), ref.logits.data() + t * size_t(m.config.vocab_size),
                          size_t(m.config.vocab_size)) < 1e-4);
  }
  // The cache keeps the window only: 12 of 40 slots per head, after the prefill and after
  // decoding token by token (whose logits above went through the trimmed cache).
  for (int h = 0; h < s.cache.heads(); ++h) CHECK(s.cache.used(size_t(h)) == W);
  for (int h = 0; h < inc.cache.heads(); ++h) CHECK(inc.cache.used(size_t(h)) == W);
  CHECK(s.cache.length() == 40);
  // The window must act: the same weights with full attention differ past it, and agree
  // before it (rows 0..W-1).
  Model full = load_model(d.path);
  full.config.sliding_window = 0;
  RunState sf(full.config, 64);
  const auto lf = forward(full, sf, toks);
  const size_t V = size_t(m.config.vocab_size);
  CHECK(test::rel_error(lf.data(), ref.logits.data(), W * V) < 1e-4);
  CHECK(test::rel_error(lf.data() + W * V, ref.logits.data() + W * V, (40 - W) * V) > 1e-3);

  // Cache policies past the window are refused rather than counting bytes the model never
  // keeps.
  CachePolicy p;
  CHECK_THROWS_WITH(apply_policy(s.cache, p),
                    Contains("sliding window is 12") && Contains("holds 40"));
}

TEST_CASE("rope_scaling linear and llama3 match the reference, and change the keys",
          "[loaders][hf_config][forward]") {
  struct Case {
    const char* what;
    json scaling;
  };
  // Llama-3.1/3.2's own values; with head_dim 16 and theta 500000 the four pair
  // wavelengths (6.3, 32.4, 167, 861, ...) fall in all three bands of original 64 / 4 and
  // 64 / 1: kept, interpolated and divided by the factor.
  const Case cases[] = {
      {"linear", {{"rope_type", "linear"}, {"factor", 4.0}}},
      {"llama3",
       {{"rope_type", "llama3"},
        {"factor", 8.0},
        {"low_freq_factor", 1.0},
        {"high_freq_factor", 4.0},
        {"original_max_position_embeddings", 64}}},
      {"llama3 via 'type'",
       {{"type", "llama3"},
        {"factor", 32.0},
        {"low_freq_factor", 1.0},
        {"high_freq_factor", 4.0},
        {"original_max_position_embeddings", 64}}},
  };
  test::TempDir d("hf_rope_scaling");
  SyntheticSpec spec = small_spec("llama", 0);
  spec.config.head_dim = 16;
  spec.config.rope_theta = 500000.0f;
  write_synthetic_hf_model(d.path, spec);
  const json base = read_config(d.path);
  std::vector<int32_t> toks;
  for (int t = 0; t < 40; ++t) toks.push_back(int32_t((t * 29 + 11) % 61));
  const Model plain = load_model(d.path);
  RunState sp(plain.config, 64);
  std::vector<float> plain_logits;
  {
    const auto lg = forward(plain, sp, toks);
    plain_logits.assign(lg.begin(), lg.end());
  }
  for (const Case& cs : cases) {
    INFO(cs.what);
    json j = base;
    j["rope_scaling"] = cs.scaling;
    write_config(d.path, j);
    const Model m = load_model(d.path);
    const test::ReferenceRun ref = test::reference_forward(m, toks);
    RunState s(m.config, 64);
    const auto logits = forward(m, s, toks);
    CHECK(test::rel_error(logits.data(), ref.logits.data(), ref.logits.size()) < 1e-4);
    // The scaling must actually act: different logits from the unscaled model (a property
    // that fails if the field were read and ignored).
    CHECK(test::rel_error(logits.data(),
                          std::vector<double>(plain_logits.begin(), plain_logits.end()).data(),
                          plain_logits.size()) > 1e-3);
  }
  // Hand-computed llama3 frequencies for head_dim 16, theta 500000, factor 8, original 64,
  // low 1, high 4: pair i has base 500000^(-i/8), wavelength 2*pi/base. Pair 0 (6.28 <
  // 16) is kept; pair 2 (wavelength 2*pi*500000^(1/4) = 167.1 > 64) is divided by 8; pair 1
  // (2*pi*500000^(1/8) = 32.4, between 16 and 64) mixes with smooth = (64/32.99 - 1)/3.
  json j = base;
  j["rope_scaling"] = cases[1].scaling;
  write_config(d.path, j);
  const Model m = load_model(d.path);
  const std::vector<double> f = rope_inv_freq(m.config);
  const double b1 = std::pow(500000.0, -1.0 / 8), b2 = std::pow(500000.0, -2.0 / 8);
  const double smooth = (64.0 / (2 * M_PI / b1) - 1.0) / 3.0;
  CHECK(f[0] == Approx(1.0).epsilon(1e-15));
  CHECK(f[1] == Approx((1 - smooth) * b1 / 8 + smooth * b1).epsilon(1e-12));
  CHECK(f[2] == Approx(b2 / 8).epsilon(1e-12));

  // Unsupported types and stray keys are refused by name.
  for (const json& bad : {json{{"rope_type", "yarn"}, {"factor", 4.0}},
                          json{{"rope_type", "dynamic"}, {"factor", 2.0}},
                          json{{"rope_type", "linear"}, {"factor", 4.0}, {"beta_fast", 32}},
                          json{{"rope_type", "llama3"}, {"factor", 8.0}}}) {
    INFO(bad.dump());
    json jb = base;
    jb["rope_scaling"] = bad;
    write_config(d.path, jb);
    const std::string err = load_error(d.path);
    CHECK_THAT(err, Contains("config.json") && Contains("rope_scaling"));
  }
}

TEST_CASE("biases: llama attention_bias / mlp_bias and qwen2's q/k/v match the reference",
          "[loaders][hf_config][forward]") {
  struct Case {
    const char* what;
    const char* arch;
    bool attn, mlp;
  };
  const Case cases[] = {{"llama attention_bias", "llama", true, false},
                        {"llama mlp_bias", "llama", false, true},
                        {"llama both", "llama", true, true},
                        {"qwen2", "qwen2", true, false}};
  std::vector<int32_t> toks;
  for (int t = 0; t < 30; ++t) toks.push_back(int32_t((t * 13 + 2) % 61));
  for (const Case& cs : cases) {
    INFO(cs.what);
    test::TempDir d("hf_bias");
    SyntheticSpec spec = small_spec(cs.arch, 0);
    spec.config.qkv_bias = cs.attn;
    spec.config.o_bias = cs.attn && std::string(cs.arch) == "llama";
    spec.config.mlp_bias = cs.mlp;
    spec.dtype = DType::BF16;
    write_synthetic_hf_model(d.path, spec);
    const json j = read_config(d.path);
    CHECK(j["model_type"] == cs.arch);
    const Model m = load_model(d.path);
    CHECK(m.config.qkv_bias == cs.attn);
    CHECK(m.config.mlp_bias == cs.mlp);
    RunState s(m.config, 64);
    const auto logits = forward(m, s, toks);
    const test::ReferenceRun ref = test::reference_forward(m, toks);
    CHECK(test::rel_error(logits.data(), ref.logits.data(), ref.logits.size()) < 1e-4);
    // K before and after RoPE and V, through an observer, against the reference.
    Grab grab;
    RunState s2(m.config, 64);
    ForwardOptions fo;
    fo.observer = &grab;
    forward(m, s2, toks, fo);
    for (int l = 0; l < m.config.n_layers; ++l) {
      const size_t n = ref.k[size_t(l)].size();
      CHECK(test::rel_error(grab.kpre[size_t(l)].data(), ref.k_pre[size_t(l)].data(), n) < 1e-4);
      CHECK(test::rel_error(grab.k[size_t(l)].data(), ref.k[size_t(l)].data(), n) < 1e-4);
      CHECK(test::rel_error(grab.v[size_t(l)].data(), ref.v[size_t(l)].data(), n) < 1e-4);
    }
    // The biases must matter: the same weights without them give other keys.
    Model nob = load_model(d.path);
    for (auto& lw : nob.weights.layers)
      lw.bk = lw.bq = lw.bv = lw.bo = lw.b_gate = lw.b_up = lw.b_down = Tensor{};
    RunState s3(nob.config, 64);
    const auto lg3 = forward(nob, s3, toks);
    CHECK(test::rel_error(lg3.data(), ref.logits.data(), ref.logits.size()) > 1e-3);
  }
  // A bias tensor the config does not announce, and one it announces but that is missing.
  test::TempDir d("hf_bias_bad");
  SyntheticSpec spec = small_spec("llama", 0);
  spec.config.qkv_bias = spec.config.o_bias = true;
  write_synthetic_hf_model(d.path, spec);
  json j = read_config(d.path);
  j["attention_bias"] = false;
  write_config(d.path, j);
  CHECK_THAT(load_error(d.path), Contains("unexpected tensor 'model.layers.0.self_attn.") &&
                                     Contains(".bias'") && Contains("attention_bias"));
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  write_config(d.path, j);
  CHECK_THAT(load_error(d.path), Contains("tensor 'model.layers.0.mlp.gate_proj.bias' is missing"));
}

TEST_CASE("qwen3: per-head q/k RMSNorm before RoPE, head_dim != hidden/heads",
          "[loaders][hf_config][forward]") {
  std::vector<int32_t> toks;
  for (int t = 0; t < 33; ++t) toks.push_back(int32_t((t * 7 + 3) % 61));
  for (bool bias : {false, true}) {
    INFO("attention_bias " << bias);
    test::TempDir d("hf_qwen3");
    SyntheticSpec spec = small_spec("qwen3", 0);
    spec.config.qk_norm = true;
    spec.config.head_dim = 16;  // 4 heads x 16 = 64 != hidden 32, as Qwen3-0.6B (16 x 128 != 1024)
    spec.config.qkv_bias = spec.config.o_bias = bias;
    spec.config.rope_theta = 1000000.0f;
    spec.config.tied_embeddings = true;
    spec.dtype = DType::BF16;
    write_synthetic_hf_model(d.path, spec);
    const json j = read_config(d.path);
    REQUIRE(j["model_type"] == "qwen3");
    REQUIRE(j["head_dim"] == 16);
    const Model m = load_model(d.path);
    REQUIRE(m.config.qk_norm);
    Grab grab;
    RunState s(m.config, 64);
    ForwardOptions fo;
    fo.observer = &grab;
    const auto logits = forward(m, s, toks, fo);
    const test::ReferenceRun ref = test::reference_forward(m, toks);
    CHECK(test::rel_error(logits.data(), ref.logits.data(), ref.logits.size()) < 1e-4);
    for (int l = 0; l < m.config.n_layers; ++l) {
      CHECK(test::rel_error(grab.q[size_t(l)].data(), ref.q[size_t(l)].data(),
                            ref.q[size_t(l)].size()) < 1e-4);
      CHECK(test::rel_error(grab.kpre[size_t(l)].data(), ref.k_pre[size_t(l)].data(),
                            ref.k_pre[size_t(l)].size()) < 1e-4);
      CHECK(test::rel_error(grab.k[size_t(l)].data(), ref.k[size_t(l)].data(),
                            ref.k[size_t(l)].size()) < 1e-4);
      // "K before RoPE" is after k_norm: each head vector's RMS is its norm weight's scale,
      // about 1 here (weights 1 +- 0.05), whatever the projection's scale.
      const std::vector<float>& kp = grab.kpre[size_t(l)];
      for (size_t r = 0; r < kp.size() / 16; ++r) {
        double ss = 0;
        for (int i = 0; i < 16; ++i) ss += double(kp[r * 16 + size_t(i)]) * kp[r * 16 + size_t(i)];
        CHECK(std::sqrt(ss / 16) == Approx(1.0).margin(0.06));
      }
    }
  }
}
