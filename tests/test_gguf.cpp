// GGUF reader: every metadata value type (nested arrays too), tensor infos and alignment
// read back as tests/gguf_writer.hpp wrote them by the spec; and lying or truncated files
// refused with the file and the field named, never read past the end.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>

#include "gguf_writer.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/mapped_file.hpp"
#include "kvscope/model/dtype.hpp"
#include "kvscope/model/gguf.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

template <class V>
std::string raw(const std::vector<V>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(V));
}

test::GgufWriter sample() {
  test::GgufWriter w;
  w.alignment = 64;
  w.str("general.architecture", "llama");
  w.u32("llama.block_count", 2);
  w.i32("some.i32", -7);
  w.u64("some.u64", uint64_t(1) << 40);
  w.f32("llama.attention.layer_norm_rms_epsilon", 1.5f);
  w.f64("some.f64", -0.25);
  w.boolean("tokenizer.ggml.add_bos_token", true);
  w.str("some.utf8", "h\xC3\xA9llo");
  w.strs("tokenizer.ggml.tokens", {"<s>", "a", "\xE2\x96\x81the"});
  w.arr<int32_t>("tokenizer.ggml.token_type", test::GgufWriter::I32, {3, 1, 1});
  w.arr<float>("tokenizer.ggml.scores", test::GgufWriter::F32, {0.0f, -1.5f, -2.0f});
  w.nested("some.nested", {{1, 2}, {3}});
  w.tensor("a", {3, 2}, 0, raw(std::vector<float>{1, 2, 3, 4, 5, 6}));
  std::vector<uint8_t> q8(34, 0);
  const uint16_t d = f32_to_f16(0.5f);
  std::memcpy(q8.data(), &d, 2);
  q8[2] = 4;                     // element 0 = 2
  q8[33] = uint8_t(int8_t(-6));  // element 31 = -3
  std::vector<uint8_t> q8x2 = q8;
  q8x2.insert(q8x2.end(), q8.begin(), q8.end());
  w.tensor("b", {64, 1}, 8, raw(q8x2));
  w.tensor("c", {4}, 1,
           raw(std::vector<uint16_t>{f32_to_f16(1), f32_to_f16(-2), 0, f32_to_f16(0.5f)}));
  return w;
}

std::string open_error(const fs::path& p) {
  try {
    open_gguf(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "(opened)";
}

}  // namespace

TEST_CASE("gguf: metadata of every type, tensor infos and alignment read back", "[gguf]") {
  test::TempDir d("gguf_read");
  const fs::path p = d.path / "m.gguf";
  test::write_bytes(p, sample().bytes());
  const GgufFile g = open_gguf(p);
  CHECK(g.version == 3);
  CHECK(g.alignment == 64);
  const auto& m = g.metadata;
  CHECK(m["general.architecture"] == "llama");
  CHECK(m["llama.block_count"] == 2);
  CHECK(g.metadata_type.at("llama.block_count") == "u32");
  CHECK(m["some.i32"] == -7);
  CHECK(m["some.u64"].get<uint64_t>() == (uint64_t(1) << 40));
  CHECK(m["llama.attention.layer_norm_rms_epsilon"].get<double>() == 1.5);
  CHECK(m["some.f64"].get<double>() == -0.25);
  CHECK(m["tokenizer.ggml.add_bos_token"] == true);
  CHECK(m["some.utf8"] == "h\xC3\xA9llo");
  CHECK(m["tokenizer.ggml.tokens"][2] == "\xE2\x96\x81the");
  CHECK(g.metadata_type.at("tokenizer.ggml.tokens") == "arr[str]");
  CHECK(m["tokenizer.ggml.token_type"][0] == 3);
  CHECK(m["tokenizer.ggml.scores"][1].get<double>() == -1.5);
  CHECK(m["some.nested"][1][0] == 3);
  CHECK(g.metadata_type.at("some.nested") == "arr[arr]");

  REQUIRE(g.tensors.size() == 3);
  const GgufTensor& a = *g.find("a");
  CHECK(a.tensor.rows == 2);
  CHECK(a.tensor.cols == 3);
  CHECK((a.tensor.data - g.file->data()) % 64 == 0);
  CHECK(a.tensor.to_f32() == std::vector<float>{1, 2, 3, 4, 5, 6});
  const GgufTensor& b = *g.find("b");
  CHECK(b.tensor.dtype == DType::Q8_0);
  const auto bv = b.tensor.to_f32();
  CHECK(bv[0] == 2.0f);    // 0.5 * 4
  CHECK(bv[31] == -3.0f);  // 0.5 * -6
  CHECK(bv[32] == 2.0f);   // second block, same bytes
  CHECK(g.find("c")->tensor.to_f32() == std::vector<float>{1, -2, 0, 0.5f});
  CHECK(g.find("missing") == nullptr);

  // Version 2 has the same layout (64-bit counts and lengths): read alike.
  test::GgufWriter w2 = sample();
  w2.version = 2;
  test::write_bytes(p, w2.bytes());
  const GgufFile g2 = open_gguf(p);
  CHECK(g2.version == 2);
  CHECK(g2.metadata == g.metadata);
  CHECK(g2.find("b")->tensor.to_f32() == bv);
}

TEST_CASE("gguf: truncated and lying files are refused by name", "[gguf][hardening]") {
  test::TempDir d("gguf_bad");
  const fs::path p = d.path / "m.gguf";
  const std::string good = sample().bytes();

  SECTION("every truncation before the last tensor's end fails cleanly, naming the file") {
    test::write_bytes(p, good);
    size_t needed = 0;  // the end of the last tensor's bytes; the padding after is optional
    {
      const GgufFile g = open_gguf(p);
      for (const GgufTensor& t : g.tensors)
        needed = std::max(needed, size_t(t.tensor.data - g.file->data()) + t.tensor.bytes());
    }
    REQUIRE(needed < good.size());
    for (size_t n = 0; n < good.size(); n += (n < 700 ? 1 : 13)) {
      test::write_bytes(p, good.substr(0, n));
      const std::string err = open_error(p);
      INFO("truncated to " << n << " of " << good.size() << " (data ends at " << needed << ")");
      if (n < needed)
        CHECK_THAT(err, Contains(p.string()));
      else
        CHECK(err == "(opened)");
    }
  }
  SECTION("magic, version, alignment") {
    std::string s = good;
    s[0] = 'X';
    test::write_bytes(p, s);
    CHECK_THAT(open_error(p), Contains("not a GGUF file"));
    s = good;
    s[4] = 1;  // version 1 (32-bit counts)
    test::write_bytes(p, s);
    CHECK_THAT(open_error(p), Contains("GGUF version 1 is not supported"));
    test::GgufWriter w = sample();
    w.alignment = 12;
    test::write_bytes(p, w.bytes());
    CHECK_THAT(open_error(p), Contains("general.alignment must be a u32 multiple of 8"));
  }
  SECTION("a string or array length the file cannot hold") {
    std::string s = good;
    const uint64_t huge = uint64_t(1) << 50;
    std::memcpy(&s[24], &huge, 8);  // the first key's length
    test::write_bytes(p, s);
    CHECK_THAT(open_error(p),
               Contains("metadata key 0") && Contains("truncated or a lying length"));
    test::GgufWriter w;
    w.arr<uint8_t>("x", test::GgufWriter::U8, {1, 2, 3});
    std::string a = w.bytes();
    const size_t count_at = a.find('x') + 1 + 4 + 4;  // key, value type, element type
    std::memcpy(&a[count_at], &huge, 8);
    test::write_bytes(p, a);
    CHECK_THAT(open_error(p), Contains("metadata 'x' claims") && Contains("elements"));
  }
  SECTION("a bool that is neither 0 nor 1") {
    test::GgufWriter w;
    w.boolean("flag", true);
    std::string s = w.bytes();
    s[s.find("flag") + 4 + 4] = 2;
    test::write_bytes(p, s);
    CHECK_THAT(open_error(p), Contains("'flag' is a bool holding 2"));
  }
  SECTION("tensor types, block alignment, offsets and the data section") {
    test::GgufWriter w;
    w.tensor("blk.0.attn_q.weight", {256, 1}, 16, std::string(66, '\0'));  // IQ2_XXS
    test::write_bytes(p, w.bytes());
    CHECK_THAT(open_error(p), Contains("'blk.0.attn_q.weight'") && Contains("IQ2_XXS"));
    test::GgufWriter w2;
    w2.tensor("t", {48, 1}, 8, std::string(51, '\0'));  // Q8_0 rows of 48: not whole blocks
    test::write_bytes(p, w2.bytes());
    CHECK_THAT(open_error(p), Contains("not whole Q8_0 blocks of 32"));
    test::GgufWriter w3;
    w3.tensor("t", {8, 1}, 0, std::string(32, '\0'));
    std::string s = w3.bytes();
    s.resize(s.size() - 16);  // data cut short
    test::write_bytes(p, s);
    CHECK_THAT(open_error(p), Contains("tensor 't'") && Contains("overruns the data section"));
  }
}
