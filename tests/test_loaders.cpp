// Loaders: bad files give an Error naming the file and what was expected; good files
// put the right bytes in the right tensors; dtype widening is exact.
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "kvscope/io/error.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/safetensors.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
using kvscope::test::slurp;
using kvscope::test::write_bytes;
namespace fs = std::filesystem;

namespace {

const fs::path kData = KVSCOPE_TEST_DATA_DIR;

// A scratch copy of a model directory to damage.
fs::path scratch_copy(const fs::path& src, const std::string& tag) {
  const fs::path dst = fs::temp_directory_path() / ("kvscope_loader_" + tag);
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src))
    fs::copy_file(e.path(), dst / e.path().filename());
  return dst;
}

// Rewrites model.safetensors with a modified header and the same data section.
void rewrite_header(const fs::path& file, const std::function<void(nlohmann::json&)>& edit) {
  const std::string bytes = slurp(file);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
  edit(h);
  const std::string hs = h.dump();
  const uint64_t m = hs.size();
  std::string out(reinterpret_cast<const char*>(&m), 8);
  write_bytes(file, out + hs + bytes.substr(8 + n));
}

}  // namespace

TEST_CASE("dtype widening matches hand-computed values", "[loader]") {
  // bf16 is the top half of a float32: 0x3F80 = 1.0, 0xC040 = -3.0, 0x3E20 = 0.15625.
  CHECK(bf16_to_f32(0x3F80) == 1.0f);
  CHECK(bf16_to_f32(0xC040) == -3.0f);
  CHECK(bf16_to_f32(0x3E20) == 0.15625f);
  // IEEE half: 0x3C00 = 1, 0xC000 = -2, 0x3555 = 0.333251953125, 0x0001 = 2^-24 (smallest
  // subnormal), 0x03FF = 1023 * 2^-24, 0x7BFF = 65504 (largest), 0x7C00 = +inf.
  CHECK(f16_to_f32(0x3C00) == 1.0f);
  CHECK(f16_to_f32(0xC000) == -2.0f);
  CHECK(f16_to_f32(0x3555) == 0.333251953125f);
  CHECK(f16_to_f32(0x0001) == 0x1p-24f);
  CHECK(f16_to_f32(0x03FF) == 1023 * 0x1p-24f);
  CHECK(f16_to_f32(0x7BFF) == 65504.0f);
  CHECK(std::isinf(f16_to_f32(0x7C00)));
  CHECK(std::isnan(f16_to_f32(0x7E00)));
  // Rounding to nearest even: 1 + 2^-8 is halfway between two bf16 values -> 1.0.
  CHECK(f32_to_bf16(1.0f + 0x1p-8f) == 0x3F80);
  CHECK(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 0x3F81);
}

TEST_CASE(
    "widen_to_f32 of BF16 arrays (vector body and tail) puts each value in a float's top half",
    "[loader]") {
  // Every length from 0 to 40 (8-wide vector body plus 0-7 tail), at odd source offsets,
  // against the definition: the 16 bits shifted left by 16.
  std::vector<uint16_t> src(48);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint16_t(0x3F80 + 977 * i);  // mixed signs too
  for (size_t n = 0; n <= 40; ++n)
    for (size_t off : {size_t(0), size_t(1), size_t(3)}) {
      std::vector<float> dst(n + 1, -7.0f);
      widen_to_f32(DType::BF16, reinterpret_cast<const std::byte*>(src.data() + off), n,
                   dst.data());
      for (size_t i = 0; i < n; ++i) {
        const uint32_t bits = uint32_t(src[off + i]) << 16;
        float want;
        std::memcpy(&want, &bits, 4);
        INFO("n " << n << " offset " << off << " entry " << i);
        REQUIRE(std::memcmp(&dst[i], &want, 4) == 0);
      }
      REQUIRE(dst[n] == -7.0f);  // nothing written past the end
    }
}

TEST_CASE("float -> half rounds to nearest even, like a _Float16 cast", "[loader]") {
  // Every finite half survives the round trip through float exactly.
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0) continue;  // NaN payloads
    REQUIRE(f32_to_f16(f16_to_f32(uint16_t(h))) == h);
  }
  // Midpoints between neighbouring positive halves (exact in float) go to the even one;
  // a hair above goes up, a hair below goes down.
  for (uint32_t h = 0; h < 0x7bffu; ++h) {
    const float a = f16_to_f32(uint16_t(h)), b = f16_to_f32(uint16_t(h + 1));
    const float mid = (a + b) / 2;
    REQUIRE(f32_to_f16(mid) == ((h & 1u) ? h + 1 : h));
    REQUIRE(f32_to_f16(std::nextafter(mid, b)) == h + 1);
    REQUIRE(f32_to_f16(std::nextafter(mid, a)) == h);
    REQUIRE(f32_to_f16(-mid) == (0x8000u | ((h & 1u) ? h + 1 : h)));
  }
  // 65504 is the largest half; from 65520 (the midpoint to 65536) on, Inf.
  CHECK(f32_to_f16(65519.996f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);
  CHECK(f32_to_f16(-1e30f) == 0xfc00);
  CHECK(f32_to_f16(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK((f32_to_f16(std::numeric_limits<float>::quiet_NaN()) & 0x7e00) == 0x7e00);
  CHECK(f32_to_f16(1e-9f) == 0);  // below half the smallest subnormal (2^-25)
#if defined(__FLT16_MAX__) && !defined(__clang__)
  // A second implementation where the compiler has one: GCC's _Float16 cast.
  uint32_t x = 12345;
  for (int i = 0; i < 1000000; ++i) {
    x = x * 1664525u + 1013904223u;
    const float f = std::bit_cast<float>(x);
    if (std::isnan(f)) continue;
    const _Float16 g = static_cast<_Float16>(f);
    REQUIRE(f32_to_f16(f) == std::bit_cast<uint16_t>(g));
  }
#endif
}

TEST_CASE("llama2.c loader reads the header and places every tensor", "[loader][model]") {
  const fs::path p = kData / "models/stories260K/stories260K.bin";
  Model m = load_model(p);
  const ModelConfig& c = m.config;
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim == 8);
  CHECK(c.vocab_size == 512);
  CHECK(c.max_seq_len == 512);
  CHECK(c.tied_embeddings);
  CHECK(c.rope_layout == RopeLayout::kAdjacentPairs);
  CHECK(m.weights.classifier.data == m.weights.tok_embedding.data);
  // Element (5, 17) of w2 (down projection, [dim, hidden]) of layer 3, located by hand:
  // header 28 bytes; embedding 512*64; rms_att 5*64; wq 5*64*64; wk, wv 5*32*64 each;
  // wo 5*64*64; rms_ffn 5*64; w1 5*172*64; then w2 layers 0..2 of 64*172 each.
  const size_t floats = 512 * 64 + 5 * 64 + 5 * 64 * 64 + 2 * 5 * 32 * 64 + 5 * 64 * 64 + 5 * 64 +
                        5 * 172 * 64 + 3 * 64 * 172 + 5 * 172 + 17;
  const std::string bytes = slurp(p);
  float expect;
  std::memcpy(&expect, bytes.data() + 28 + 4 * floats, 4);
  std::vector<float> row(172);
  m.weights.layers[3].w_down.rows_to_f32(5, 1, row.data());
  CHECK(row[17] == expect);
  CHECK(parameter_count(m) ==
        512 * 64 + 5 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 172 * 64) + 64);
}

TEST_CASE("llama2.c loader rejects truncated and lying checkpoints", "[loader]") {
  const std::string good = slurp(kData / "models/stories260K/stories260K.bin");
  const fs::path bad = fs::temp_directory_path() / "kvscope_truncated.bin";
  write_bytes(bad, good.substr(0, good.size() - 1000));
  REQUIRE_THROWS_WITH(load_model(bad), Contains(bad.string()) && Contains("1055540") &&
                                           Contains("needs 1056540 bytes") &&
                                           Contains("truncated"));
  write_bytes(bad, good.substr(0, 20));
  REQUIRE_THROWS_WITH(load_model(bad), Contains(bad.string()) && Contains("28-byte header"));
  // A header that claims 3 KV heads for 8 query heads.
  std::string lying = good;
  const int32_t three = 3;
  std::memcpy(lying.data() + 16, &three, 4);
  write_bytes(bad, lying);
  REQUIRE_THROWS_WITH(load_model(bad), Contains(bad.string()) && Contains("n_kv_heads (3)"));
  // A negative dimension.
  std::string neg = good;
  const int32_t minus = -64;
  std::memcpy(neg.data(), &minus, 4);
  write_bytes(bad, neg);
  REQUIRE_THROWS_WITH(load_model(bad), Contains(bad.string()) && Contains("dim = -64"));
  fs::remove(bad);
  REQUIRE_THROWS_WITH(load_model(bad), Contains(bad.string()) && Contains("does not exist"));
}

TEST_CASE("safetensors loader rejects overrunning offsets, bad dtypes and bad configs",
          "[loader]") {
  const fs::path src = kData / "models/tinystories656K";
  SECTION("a file cut short: offsets overrun the data section") {
    // 2624000 data bytes - 4096 = 2619904; header keys are checked in sorted order, and
    // layer 1's v_proj is the first whose end offset lies past the cut.
    const fs::path d = scratch_copy(src, "cut");
    const std::string b = slurp(d / "model.safetensors");
    write_bytes(d / "model.safetensors", b.substr(0, b.size() - 4096));
    REQUIRE_THROWS_WITH(load_model(d), Contains("model.safetensors") &&
                                           Contains("model.layers.1.self_attn.v_proj.weight") &&
                                           Contains("[2590720, 2623488] overrun the data "
                                                    "section of 2619904 bytes"));
  }
  SECTION("header length beyond the file") {
    const fs::path d = scratch_copy(src, "hdrlen");
    std::string b = slurp(d / "model.safetensors");
    const uint64_t huge = uint64_t(1) << 40;
    std::memcpy(b.data(), &huge, 8);
    write_bytes(d / "model.safetensors", b);
    REQUIRE_THROWS_WITH(load_model(d), Contains("model.safetensors") &&
                                           Contains("header length 1099511627776 overruns"));
  }
  SECTION("an unsupported dtype names the tensor") {
    const fs::path d = scratch_copy(src, "dtype");
    rewrite_header(d / "model.safetensors",
                   [](nlohmann::json& h) { h["model.norm.weight"]["dtype"] = "I64"; });
    REQUIRE_THROWS_WITH(load_model(d), Contains("model.norm.weight") && Contains("'I64'") &&
                                           Contains("expected F32, F16 or BF16"));
  }
  SECTION("a shape that disagrees with the byte span") {
    const fs::path d = scratch_copy(src, "span");
    rewrite_header(d / "model.safetensors",
                   [](nlohmann::json& h) { h["model.norm.weight"]["shape"] = {129}; });
    REQUIRE_THROWS_WITH(load_model(d), Contains("model.norm.weight") && Contains("516 bytes") &&
                                           Contains("span 512"));
  }
  SECTION("config.json without a required field") {
    const fs::path d = scratch_copy(src, "cfg");
    auto j = nlohmann::json::parse(slurp(d / "config.json"));
    j.erase("hidden_size");
    write_bytes(d / "config.json", j.dump());
    REQUIRE_THROWS_WITH(
        load_model(d), Contains("config.json") && Contains("missing required field 'hidden_size'"));
  }
  SECTION("config.json that disagrees with the tensors") {
    const fs::path d = scratch_copy(src, "shape");
    auto j = nlohmann::json::parse(slurp(d / "config.json"));
    j["intermediate_size"] = 400;
    write_bytes(d / "config.json", j.dump());
    REQUIRE_THROWS_WITH(load_model(d), Contains("model.layers.0.mlp.gate_proj.weight") &&
                                           Contains("[384, 128]") &&
                                           Contains("expected [400, 128]"));
  }
  SECTION("a missing tensor") {
    const fs::path d = scratch_copy(src, "missing");
    rewrite_header(d / "model.safetensors",
                   [](nlohmann::json& h) { h.erase("model.layers.1.self_attn.v_proj.weight"); });
    REQUIRE_THROWS_WITH(load_model(d),
                        Contains("'model.layers.1.self_attn.v_proj.weight' is missing"));
  }
  SECTION("a wrong field type") {
    const fs::path d = scratch_copy(src, "type");
    auto j = nlohmann::json::parse(slurp(d / "config.json"));
    j["num_hidden_layers"] = "two";
    write_bytes(d / "config.json", j.dump());
    REQUIRE_THROWS_WITH(load_model(d), Contains("num_hidden_layers") &&
                                           Contains("must be an integer") &&
                                           Contains("got \"two\""));
  }
}

TEST_CASE("tinystories656K loads with its tied lm_head and rotate-half RoPE", "[loader][model]") {
  Model m = load_model(kData / "models/tinystories656K");
  CHECK(m.config.tied_embeddings);
  CHECK(m.config.head_dim == 16);
  CHECK(m.config.norm_eps == 1e-6f);
  CHECK(m.config.rope_layout == RopeLayout::kRotateHalf);
  CHECK(m.weights.tok_embedding.name == "lm_head.weight");
  CHECK(m.weights.classifier.data == m.weights.tok_embedding.data);
  CHECK(find_tokenizer_for(kData / "models/tinystories656K").filename() == "tokenizer.json");
  CHECK(find_tokenizer_for(kData / "models/babyllama105/model5000.bin").filename() ==
        "tok105.model");
  CHECK(find_tokenizer_for(kData / "models/stories260K/stories260K.bin").filename() ==
        "tok512.bin");
}
