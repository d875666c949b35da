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
#include <map>
#include <set>

#include "capture_observer.hpp"
#include "gguf_convert.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/model/gguf.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

using Grab = test::CaptureQKV;
using test::write_gguf;

struct Run {
  std::vector<float> logits;
  Grab g;
};

Run run(const Model& m, size_t block_bytes = ForwardOptions{}.widen_block_bytes) {
  std::vector<int32_t> toks;
  for (int i = 0; i < 24; ++i) toks.push_back(int32_t((i * 13 + 5) % m.config.vocab_size));
  Run r;
  RunState s(m.config, 32);
  ForwardOptions o;
  o.observer = &r.g;
  o.widen_block_bytes = block_bytes;
  const auto lg = forward(m, s, toks, o);
  r.logits.assign(lg.begin(), lg.end());
  return r;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  const std::vector<double> bd(b.begin(), b.end());
  return test::rel_error(a.data(), bd.data(), bd.size());
}

}  // namespace

TEST_CASE("GGUF conversions of llama, qwen2, qwen3 and phi3 checkpoints compute the HF model",
          "[gguf][loaders][forward]") {
  for (const char* arch : {"llama", "qwen2", "qwen3", "phi3"}) {
    INFO(arch);
    SyntheticSpec spec;
    ModelConfig& c = spec.config;
    c.family = *family_from_name(arch);
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
    w.tensor("blk.1.attn_norm.weight", {32}, 0, std::string(128, '\0'));
  });
  CHECK_THROWS_WITH(load_model(p), Catch::Contains("tensor 'blk.1.attn_norm.weight' is not used"));
  // A lying block_count (fuzz_gguf's finding: 2^24 layers sized a 6 GB layer table).
  write_gguf(p, hf, false, &deq);
  {
    std::string bytes = test::slurp(p);
    const size_t at = bytes.find("llama.block_count");
    REQUIRE(at != std::string::npos);
    const uint32_t lie = 1u << 24;
    std::memcpy(&bytes[at + 17 + 4], &lie, 4);  // after the key: type (u32), then the value
    test::write_bytes(p, bytes);
  }
  CHECK_THROWS_WITH(load_model(p), Catch::Contains("block_count is 16777216 but tensor "
                                                   "'blk.16777215.attn_norm.weight' is missing"));
  {  // the same lie in a config.json
    nlohmann::json j = nlohmann::json::parse(test::slurp(d.path / "hf" / "config.json"));
    j["num_hidden_layers"] = 65536;  // the most config.json may say
    test::write_bytes(d.path / "hf" / "config.json", j.dump());
    CHECK_THROWS_WITH(load_model(d.path / "hf"),
                      Catch::Contains("num_hidden_layers is 65536 but tensor "
                                      "'model.layers.65535.input_layernorm.weight' is missing"));
  }
  // Keys of another architecture are not silently ignored.
  write_gguf(p, hf, false, &deq,
             [](test::GgufWriter& w) { w.f32("llama.attn_logit_softcapping", 50.0f); });
  CHECK_THROWS_WITH(load_model(p), Catch::Contains("'llama.attn_logit_softcapping' = 50"));
  write_gguf(p, hf, false, &deq,
             [](test::GgufWriter& w) { w.f32("llama.rope.scaling.attn_factor", 1.2f); });
  CHECK_THROWS_WITH(load_model(p), Catch::Contains("'llama.rope.scaling.attn_factor'"));
  test::GgufWriter g;
  g.str("general.architecture", "gptneox");
  test::write_bytes(p, g.bytes());
  CHECK_THROWS_WITH(load_model(p), Catch::Contains("GGUF architecture 'gptneox' is not supported"));
}

namespace {

// A block of ggml type `type` with random packed bits and small finite half-precision
// scales (at the offsets of ggml's block layouts), so every value is finite.
struct BlockLayout {
  uint32_t type;
  const char* name;
  int values, bytes;
  std::vector<int> half_offsets;  // d (and dmin / m) fields
};
const std::vector<BlockLayout> kLayouts = {
    {2, "Q4_0", 32, 18, {0}},       {3, "Q4_1", 32, 20, {0, 2}},     {6, "Q5_0", 32, 22, {0}},
    {7, "Q5_1", 32, 24, {0, 2}},    {10, "Q2_K", 256, 84, {80, 82}}, {11, "Q3_K", 256, 110, {108}},
    {12, "Q4_K", 256, 144, {0, 2}}, {13, "Q5_K", 256, 176, {0, 2}},  {14, "Q6_K", 256, 210, {208}},
    {20, "IQ4_NL", 32, 18, {0}},
};

std::string random_blocks(const BlockLayout& L, int64_t n_values, uint64_t& state) {
  std::string out;
  for (int64_t b = 0; b < n_values / L.values; ++b) {
    std::string blk(size_t(L.bytes), '\0');
    for (char& c : blk) c = char(splitmix64(state++) & 0xff);
    for (int off : L.half_offsets) {
      // |scale| in [1e-4, 2e-3]: weights of order 1e-2, as a trained layer's.
      const double u = double(splitmix64(state++) >> 11) / double(1ull << 53);
      const uint16_t h = f32_to_f16(float(1e-4 + 1.9e-3 * u));
      std::memcpy(blk.data() + off, &h, 2);
    }
    out += blk;
  }
  return out;
}

}  // namespace

TEST_CASE("GGUF models stored in every block type compute their dequantized weights",
          "[gguf][loaders][forward][quant]") {
  // Each matrix in another of the ten block types (llama's Q/K among them, so the
  // converter's row permutation is undone on packed rows); loaded with no widening at load,
  // the forward pass dequantizes row ranges per layer. The twin holds the same stored
  // blocks dequantized here, tensor by tensor from the file, and un-permuted by this test.
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.dim = 256, c.hidden_dim = 512, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
  c.head_dim = 64, c.vocab_size = 67, c.max_seq_len = 64;
  test::TempDir d("gguf_kquants");
  write_synthetic_hf_model(d.path / "hf", spec);
  const Model hf = load_model(d.path / "hf");
  uint64_t state = 99;
  size_t next = 0;
  std::map<std::string, std::string> type_of;
  Model unused;
  write_gguf(
      d.path / "k.gguf", hf, false, &unused, {},
      [&](const std::string& name, int64_t rows, int64_t cols, uint32_t* type, std::string* bytes) {
        const BlockLayout& L = kLayouts[next++ % kLayouts.size()];
        *type = L.type;
        *bytes = random_blocks(L, rows * cols, state);
        type_of[name] = L.name;
        return true;
      });
  const Model g = load_model(d.path / "k.gguf", LoadOptions{0});
  std::set<std::string> seen;
  for (const auto& [n, t] : type_of) seen.insert(t);
  CHECK(seen.size() == kLayouts.size());  // every type is in the model
  CHECK(std::string(dtype_name(g.weights.layers[0].wq.dtype)) == type_of["blk.0.attn_q.weight"]);

  Model twin = g;
  const GgufFile f = open_gguf(d.path / "k.gguf");
  auto deq = [&](const std::string& name, bool unpermute) {
    const Tensor& t = f.tensors[f.index.at(name)].tensor;
    std::vector<float> x = t.to_f32();  // stored order
    if (unpermute) x = test::unpermute_rows(x, t.rows, t.cols, c.head_dim);
    return make_tensor(name, t.rows, t.cols, x);
  };
  twin.weights.tok_embedding = deq("token_embd.weight", false);
  twin.weights.classifier = deq("output.weight", false);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& w = twin.weights.layers[size_t(l)];
    w.wq = deq(p + "attn_q.weight", true);
    w.wk = deq(p + "attn_k.weight", true);
    w.wv = deq(p + "attn_v.weight", false);
    w.wo = deq(p + "attn_output.weight", false);
    w.w_gate = deq(p + "ffn_gate.weight", false);
    w.w_up = deq(p + "ffn_up.weight", false);
    w.w_down = deq(p + "ffn_down.weight", false);
  }
  const Run want = run(twin);
  // Whole layers widened, then every matrix dequantized inside its product a few rows at
  // a time (5000 bytes: 4 rows of 256 or 2 of 512 on one thread, half that on each of two;
  // a 7B checkpoint's path).
  for (size_t block : {ForwardOptions{}.widen_block_bytes, size_t(5000)}) {
    INFO("widened in blocks of " << block << " bytes");
    const Run got = run(g, block);
    CHECK(rel(got.logits, want.logits) < 1e-5);
    for (int l = 0; l < c.n_layers; ++l) {
      CHECK(rel(got.g.kpre[size_t(l)], want.g.kpre[size_t(l)]) < 1e-5);
      CHECK(rel(got.g.v[size_t(l)], want.g.v[size_t(l)]) < 1e-5);
    }
  }
}
