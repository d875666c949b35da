// Gemma 2, Gemma 3 (text) and Phi-3 checkpoints: small random weights under config.json
// files that carry the real models' fields (gemma-2-2b, gemma-3-1b, Phi-3-mini-4k,
// Phi-3.5-mini / Phi-4-mini), run through load_model + forward and compared with
// reference_hf.cpp, which reads the same directory the way transformers does. Sequences
// are longer than every sliding window in the configs. Tolerance: relative L2 error
// < 1e-4 on logits, Q, K before/after RoPE and V (float32 against double).
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "capture_observer.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "reference_hf.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr double kTol = 1e-4;

using Grab = test::CaptureQKV;

// Random weights of the shapes `c` describes (the synthetic writer names them per family),
// then config.json replaced by `cfg`, the test's own transcription of a real model's file.
void write_model(const fs::path& dir, const ModelConfig& c, const json& cfg,
                 DType dt = DType::F32) {
  SyntheticSpec spec;
  spec.config = c;
  spec.dtype = dt;
  spec.seed = 7;
  write_synthetic_hf_model(dir, spec);
  test::write_bytes(dir / "config.json", cfg.dump(2));
}

std::vector<int32_t> some_tokens(int T, int vocab) {
  std::vector<int32_t> t;
  for (int i = 0; i < T; ++i) t.push_back(int32_t((i * 29 + 3) % vocab));
  return t;
}

// One prefill of every token against the reference (logits and every captured tensor),
// then (when `decode`) the same tokens through the cache one at a time (logits).
void check_against_reference(const fs::path& dir, int T, bool decode = true) {
  const Model m = load_model(dir);
  const auto toks = some_tokens(T, m.config.vocab_size);
  const test::ReferenceRun ref = test::reference_forward_hf(dir, toks);
  Grab g;
  RunState s(m.config, T + 4);
  ForwardOptions opt;
  opt.observer = &g;
  opt.query_block = 5;  // blocks that straddle the windows' edges
  const auto lg = forward(m, s, toks, opt);
  INFO(dir.filename().string() << " T=" << T);
  CHECK(test::rel_error(lg.data(), ref.logits.data(), ref.logits.size()) < kTol);
  REQUIRE(int(g.q.size()) == m.config.n_layers);
  for (int l = 0; l < m.config.n_layers; ++l) {
    INFO("layer " << l);
    CHECK(test::rel_error(g.q[size_t(l)].data(), ref.q[size_t(l)].data(), ref.q[size_t(l)].size()) <
          kTol);
    CHECK(test::rel_error(g.kpre[size_t(l)].data(), ref.k_pre[size_t(l)].data(),
                          ref.k_pre[size_t(l)].size()) < kTol);
    CHECK(test::rel_error(g.k[size_t(l)].data(), ref.k[size_t(l)].data(), ref.k[size_t(l)].size()) <
          kTol);
    CHECK(test::rel_error(g.v[size_t(l)].data(), ref.v[size_t(l)].data(), ref.v[size_t(l)].size()) <
          kTol);
  }
  // A windowed layer's cache keeps at most its window; a global layer every token.
  auto check_kept = [&](const KVCache& cache) {
    for (int l = 0; l < m.config.n_layers; ++l) {
      const int W = m.config.window_of(l);
      for (int kv = 0; kv < m.config.n_kv_heads; ++kv)
        CHECK(cache.used(l, kv) == (W > 0 ? std::min(W, T) : T));
    }
  };
  check_kept(s.cache);
  if (!decode) return;
  const size_t V = size_t(m.config.vocab_size);
  RunState inc(m.config, T + 4);
  for (int t = 0; t < T; ++t) {
    const auto l1 = forward(m, inc, std::span<const int32_t>(&toks[size_t(t)], 1));
    INFO("decoding step " << t);
    CHECK(test::rel_error(l1.data(), ref.logits.data() + size_t(t) * V, V) < kTol);
  }
  check_kept(inc.cache);
}

ModelConfig gemma_shape(const std::string& arch, int layers, int kv_heads) {
  ModelConfig c;
  c.family = *family_from_name(arch);
  c.dim = 32;
  c.hidden_dim = 64;
  c.n_layers = layers;
  c.n_heads = 4;
  c.n_kv_heads = kv_heads;
  c.head_dim = 16;  // != dim / heads, as in every Gemma
  c.vocab_size = 61;
  c.max_seq_len = 64;
  c.tied_embeddings = true;
  c.norm_offset = 1.0f;
  c.sandwich_norms = true;
  c.mlp_act = MlpActivation::kGeluTanh;
  c.qk_norm = arch == "gemma3_text";
  c.attn_scale = 0.2f;
  return c;
}

// gemma-2-2b's config.json, shrunk (field set and kinds of values as shipped).
json gemma2_config() {
  return json::parse(R"({
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "attn_logit_softcapping": 2.0, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 60], "final_logit_softcapping": 3.0, "head_dim": 16,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64,
    "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 4,
    "num_hidden_layers": 3, "num_key_value_heads": 2, "pad_token_id": 0,
    "query_pre_attn_scalar": 24, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "sliding_window": 6, "torch_dtype": "float32", "transformers_version": "4.42.4",
    "use_cache": true, "vocab_size": 61})");
}

// gemma-3-1b-it's config.json, shrunk: one KV head, 5:1-style local/global pattern (3 here
// so that 4 layers hold both kinds), linear rope_scaling on the global layers only.
json gemma3_config() {
  return json::parse(R"({
    "architectures": ["Gemma3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "attn_logit_softcapping": null, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 56], "final_logit_softcapping": null, "head_dim": 16,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 32, "initializer_range": 0.02,
    "intermediate_size": 64, "max_position_embeddings": 32768, "model_type": "gemma3_text",
    "num_attention_heads": 4, "num_hidden_layers": 4, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 24, "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "rope_theta": 1000000, "sliding_window": 5, "sliding_window_pattern": 3,
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0", "use_cache": true,
    "vocab_size": 61})");
}

ModelConfig phi3_shape(int kv_heads) {
  ModelConfig c;
  c.family = Family::kPhi3;
  c.dim = 48;
  c.hidden_dim = 64;
  c.n_layers = 2;
  c.n_heads = 3;
  c.n_kv_heads = kv_heads;
  c.head_dim = 16;
  c.vocab_size = 61;
  c.max_seq_len = 128;
  return c;
}

// Phi-3-mini-4k-instruct's config.json, shrunk: MHA, a sliding window, no rope_scaling.
json phi3_mini_config() {
  return json::parse(R"({
    "architectures": ["Phi3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                 "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
    "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 60, "hidden_act": "silu",
    "hidden_size": 48, "initializer_range": 0.02, "intermediate_size": 64,
    "max_position_embeddings": 4096, "model_type": "phi3", "num_attention_heads": 3,
    "num_hidden_layers": 2, "num_key_value_heads": 3, "original_max_position_embeddings": 4096,
    "pad_token_id": 59, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": null,
    "rope_theta": 10000.0, "sliding_window": 7, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_cache": true,
    "vocab_size": 61})");
}

// Phi-4-mini-instruct's shape of config (GQA, partial_rotary_factor 0.75, longrope with
// short/long factors), shrunk so that 20 tokens pass original_max_position_embeddings.
json phi4_mini_config() {
  json j = json::parse(R"({
    "architectures": ["Phi3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 60, "full_attn_mod": 1,
    "hidden_act": "silu", "hidden_size": 48, "initializer_range": 0.02,
    "intermediate_size": 64, "interpolate_factor": 1, "lm_head_bias": false,
    "max_position_embeddings": 128, "mlp_bias": false, "model_type": "phi3",
    "num_attention_heads": 3, "num_hidden_layers": 2, "num_key_value_heads": 1,
    "original_max_position_embeddings": 16, "pad_token_id": 59,
    "partial_rotary_factor": 0.75, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": true,
    "torch_dtype": "bfloat16", "transformers_version": "4.45.0", "use_cache": true,
    "vocab_size": 61})");
  j["rope_scaling"] = {{"type", "longrope"},
                       {"short_factor", {1.0, 1.1, 1.3, 1.9, 2.7, 3.5}},
                       {"long_factor", {1.0, 1.8, 3.9, 9.5, 21.0, 40.0}}};
  return j;
}

}  // namespace

TEST_CASE("gemma2: sandwich norms, GeGLU, soft-caps, alternating windows match transformers",
          "[families][forward]") {
  test::TempDir d("fam_gemma2");
  write_model(d.path, gemma_shape("gemma2", 3, 2), gemma2_config());
  const Model m = load_model(d.path);
  const ModelConfig& c = m.config;
  CHECK(c.window_of(0) == 6);  // layers 0 and 2 slide, 1 is global
  CHECK(c.window_of(1) == 0);
  CHECK(c.window_of(2) == 6);
  CHECK(c.attn_softcap == 2.0f);
  CHECK(c.final_softcap == 3.0f);
  CHECK(c.tied_embeddings);
  check_against_reference(d.path, 20);

  SECTION("absent soft-cap keys mean Gemma2Config's defaults 50 and 30") {
    json j = gemma2_config();
    j.erase("attn_logit_softcapping");
    j.erase("final_logit_softcapping");
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK(load_model(d.path).config.attn_softcap == 50.0f);
    CHECK(load_model(d.path).config.final_softcap == 30.0f);
    check_against_reference(d.path, 20);
  }
  SECTION("layer_types replaces the default pattern") {
    json j = gemma2_config();
    j["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention"};
    test::write_bytes(d.path / "config.json", j.dump());
    const Model m2 = load_model(d.path);
    CHECK(m2.config.window_of(0) == 0);
    CHECK(m2.config.window_of(1) == 6);
    check_against_reference(d.path, 20);
  }
  SECTION("an absent head_dim is Gemma2Config's 256, not hidden / heads") {
    test::TempDir h("fam_gemma2_hd");
    ModelConfig wide = gemma_shape("gemma2", 3, 1);
    wide.n_heads = 2, wide.head_dim = 256;
    json j = gemma2_config();
    j.erase("head_dim");
    j["num_attention_heads"] = 2;
    j["num_key_value_heads"] = 1;
    write_model(h.path, wide, j);
    CHECK(load_model(h.path).config.head_dim == 256);
    check_against_reference(h.path, 12);
  }
  SECTION("an MLP bias, which Gemma does not have, is refused") {
    json j = gemma2_config();
    j["mlp_bias"] = true;
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK_THROWS_WITH(load_model(d.path),
                      Contains("'mlp_bias' = true is not supported for gemma2"));
  }
  SECTION("BF16 weights (the shipped dtype) widened per layer") {
    test::TempDir b("fam_gemma2_bf16");
    write_model(b.path, gemma_shape("gemma2", 3, 2), gemma2_config(), DType::BF16);
    check_against_reference(b.path, 20);
  }
}

TEST_CASE("gemma3_text: q/k norms, local and global RoPE bases, 1-in-N global layers",
          "[families][forward]") {
  test::TempDir d("fam_gemma3");
  write_model(d.path, gemma_shape("gemma3_text", 4, 1), gemma3_config());
  const Model m = load_model(d.path);
  const ModelConfig& c = m.config;
  CHECK(c.window_of(0) == 5);
  CHECK(c.window_of(2) == 0);  // (2 + 1) % 3 == 0: global
  CHECK(c.window_of(3) == 5);
  CHECK(c.local_rope(0));
  CHECK_FALSE(c.local_rope(2));
  CHECK(c.attn_softcap == 0.0f);
  CHECK(c.final_softcap == 0.0f);
  check_against_reference(d.path, 20);

  SECTION("the two bases differ: global layers' keys move when rope_theta does") {
    json j = gemma3_config();
    j["rope_theta"] = 10000;
    j["rope_scaling"] = nullptr;
    test::write_bytes(d.path / "config.json", j.dump());
    const Model m2 = load_model(d.path);
    const auto toks = some_tokens(12, 61);
    Grab a, b;
    RunState s1(m.config, 16), s2(m2.config, 16);
    ForwardOptions o1, o2;
    o1.observer = &a;
    o2.observer = &b;
    forward(m, s1, toks, o1);
    forward(m2, s2, toks, o2);
    // Layer 0 is local (same base in both): identical keys. Layer 2 is global: not.
    CHECK(test::rel_error(a.k[0].data(), std::vector<double>(b.k[0].begin(), b.k[0].end()).data(),
                          a.k[0].size()) < 1e-6);
    CHECK(test::rel_error(a.k[2].data(), std::vector<double>(b.k[2].begin(), b.k[2].end()).data(),
                          a.k[2].size()) > 1e-2);
    check_against_reference(d.path, 20);
  }
  SECTION("the multimodal gemma3 config is refused with the reason") {
    json j = gemma3_config();
    j["model_type"] = "gemma3";
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK_THROWS_WITH(load_model(d.path), Contains("gemma3_text"));
  }
}

TEST_CASE("phi3: fused qkv_proj / gate_up_proj and its sliding window match transformers",
          "[families][forward]") {
  test::TempDir d("fam_phi3");
  write_model(d.path, phi3_shape(3), phi3_mini_config());
  const Model m = load_model(d.path);
  CHECK(m.config.sliding_window == 7);
  CHECK(m.config.rot_dim() == 16);
  check_against_reference(d.path, 20);

  SECTION("biases transformers' Phi3 would ignore are refused") {
    json j = phi3_mini_config();
    j["attention_bias"] = true;
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK_THROWS_WITH(load_model(d.path), Contains("'attention_bias' = true is not supported "
                                                   "for phi3"));
  }
  SECTION("a fused tensor of the wrong height is refused by name") {
    json j = phi3_mini_config();
    j["num_key_value_heads"] = 1;  // the file holds q + 2 x 3 heads
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK_THROWS_WITH(load_model(d.path), Contains("self_attn.qkv_proj.weight") &&
                                              Contains("has 144 rows, expected 80"));
  }
}

TEST_CASE("phi3: partial rotary and longrope short/long factors match transformers",
          "[families][forward]") {
  test::TempDir d("fam_phi4");
  ModelConfig shape = phi3_shape(1);
  shape.tied_embeddings = true;
  write_model(d.path, shape, phi4_mini_config());
  const Model m = load_model(d.path);
  const ModelConfig& c = m.config;
  CHECK(c.rot_dim() == 12);
  // factor 128 / 16 = 8: attention factor sqrt(1 + ln 8 / ln 16) = sqrt(1.75), by hand.
  CHECK(c.rope_scaling.attention_factor == Approx(std::sqrt(1.75)).epsilon(1e-12));
  check_against_reference(d.path, 12);  // <= 16 positions: short factors
  // Past 16: long factors for the whole call. Not token by token: transformers, like
  // forward(), picks the factors per call, so decoding keeps the short-factor keys of
  // positions 0..15 in its cache and differs from this one-call reference by design.
  check_against_reference(d.path, 20, false);

  SECTION("the pass-through dims of K are not rotated: equal before and after RoPE") {
    const auto toks = some_tokens(9, 61);
    Grab g;
    RunState s(c, 12);
    ForwardOptions o;
    o.observer = &g;
    forward(m, s, toks, o);
    double moved_rot = 0, moved_pass = 0;
    for (size_t i = 0; i < g.k[0].size(); ++i) {
      const double dlt = std::abs(g.k[0][i] - g.kpre[0][i]);
      (i % 16 < 12 ? moved_rot : moved_pass) += dlt;
    }
    CHECK(moved_pass == 0.0);
    CHECK(moved_rot > 1.0);
  }
  SECTION("longrope needs rotary_dim / 2 factors") {
    json j = phi4_mini_config();
    j["rope_scaling"]["short_factor"] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK_THROWS_WITH(load_model(d.path), Contains("rotary_dim/2 = 6") && Contains("got 8 and 6"));
  }
  SECTION("partial rotary and longrope are refused outside phi3") {
    json j = phi4_mini_config();
    j["model_type"] = "llama";
    for (const char* k : {"full_attn_mod", "interpolate_factor", "lm_head_bias", "embd_pdrop",
                          "resid_pdrop", "original_max_position_embeddings", "sliding_window"})
      j.erase(k);
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK_THROWS_WITH(load_model(d.path), Contains("'partial_rotary_factor' = 0.75"));
    j.erase("partial_rotary_factor");
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK_THROWS_WITH(
        load_model(d.path),
        Contains("rope_scaling type 'longrope' is not supported for model_type 'llama'"));
  }
}

TEST_CASE("qwen2 with use_sliding_window: layers from max_window_layers on slide",
          "[families][forward]") {
  // Qwen2.5-7B's config.json, shrunk, with its window switched on (off in the shipped
  // file): layers 0 keeps global attention, 1 and 2 see the last 5 keys.
  const json cfg = json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 60,
    "eos_token_id": 60, "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02,
    "intermediate_size": 64, "max_position_embeddings": 131072, "max_window_layers": 1,
    "model_type": "qwen2", "num_attention_heads": 4, "num_hidden_layers": 3,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 5, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": true,
    "vocab_size": 61})");
  ModelConfig c;
  c.family = Family::kQwen2;
  c.dim = 32, c.hidden_dim = 64, c.n_layers = 3, c.n_heads = 4, c.n_kv_heads = 2;
  c.head_dim = 8, c.vocab_size = 61, c.max_seq_len = 64, c.qkv_bias = true;
  test::TempDir d("fam_qwen2_window");
  write_model(d.path, c, cfg);
  const Model m = load_model(d.path);
  CHECK(m.config.window_of(0) == 0);
  CHECK(m.config.window_of(1) == 5);
  CHECK(m.config.window_of(2) == 5);
  check_against_reference(d.path, 20);
  SECTION("layer_types naming sliding layers while use_sliding_window is false: refused") {
    json j = cfg;
    j["use_sliding_window"] = false;
    j["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention"};
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK_THROWS_WITH(load_model(d.path), Contains("layer_types holds \"sliding_attention\"") &&
                                              Contains("use_sliding_window is false"));
  }
  SECTION("use_sliding_window false: every layer global, sliding_window ignored") {
    json j = cfg;
    j["use_sliding_window"] = false;
    test::write_bytes(d.path / "config.json", j.dump());
    CHECK(load_model(d.path).config.window_of(2) == 0);
    check_against_reference(d.path, 20);
  }
}
