// ggml block formats (GGUF weights): one block per type built byte by byte, and the values
// of chosen elements worked out by hand from the layout in ggml-common.h (the comment
// beside each expectation shows the arithmetic). Exact: every value is a small multiple of
// a power of two.
#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

#include "kvscope/model/dtype.hpp"
#include "kvscope/model/tensor.hpp"

using namespace kvscope;

namespace {

using Block = std::vector<uint8_t>;

void put_half(Block& b, size_t at, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(b.data() + at, &h, 2);
}

std::vector<float> dq(DType t, const Block& b) {
  REQUIRE(b.size() % dtype_block_bytes(t) == 0);
  const int64_t n_blocks = int64_t(b.size() / dtype_block_bytes(t));
  std::vector<float> y(size_t(n_blocks * dtype_block(t)));
  widen_to_f32(t, reinterpret_cast<const std::byte*>(b.data()), y.size(), y.data());
  return y;
}

}  // namespace

TEST_CASE("block sizes are ggml's", "[quant]") {
  CHECK(row_bytes(DType::Q4_0, 4096) == 128 * 18);
  CHECK(row_bytes(DType::Q8_0, 64) == 2 * 34);
  CHECK(row_bytes(DType::Q4_K, 4096) == 16 * 144);
  CHECK(row_bytes(DType::Q6_K, 256) == 210);
  CHECK(row_bytes(DType::Q2_K, 256) == 84);
  CHECK(row_bytes(DType::Q3_K, 256) == 110);
  CHECK(row_bytes(DType::Q5_K, 256) == 176);
  CHECK(row_bytes(DType::BF16, 10) == 20);
}

TEST_CASE("legacy 32-element blocks: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL", "[quant]") {
  SECTION("Q8_0: d * q") {
    Block b(34, 0);
    put_half(b, 0, 0.5f);
    for (int i = 0; i < 32; ++i) b[size_t(2 + i)] = uint8_t(int8_t(i - 16));
    const auto y = dq(DType::Q8_0, b);
    CHECK(y[0] == -8.0f);  // 0.5 * (0 - 16)
    CHECK(y[31] == 7.5f);  // 0.5 * 15
  }
  SECTION("Q4_0: low nibbles are elements 0-15, high 16-31, d (q - 8)") {
    Block b(18, 0);
    put_half(b, 0, 0.5f);
    b[2 + 3] = 0xA3;
    const auto y = dq(DType::Q4_0, b);
    CHECK(y[3] == -2.5f);  // 0.5 * (3 - 8)
    CHECK(y[19] == 1.0f);  // 0.5 * (10 - 8)
    CHECK(y[0] == -4.0f);  // 0.5 * (0 - 8)
  }
  SECTION("Q4_1: d q + m") {
    Block b(20, 0);
    put_half(b, 0, 0.5f);
    put_half(b, 2, -1.0f);
    b[4 + 5] = 0x7C;
    const auto y = dq(DType::Q4_1, b);
    CHECK(y[5] == 5.0f);   // 0.5 * 12 - 1
    CHECK(y[21] == 2.5f);  // 0.5 * 7 - 1
    CHECK(y[0] == -1.0f);  // 0.5 * 0 - 1
  }
  SECTION("Q5_0 / Q5_1: the fifth bit of element i is bit i of qh") {
    for (bool with_min : {false, true}) {
      Block b(with_min ? 24 : 22, 0);
      put_half(b, 0, 0.5f);
      if (with_min) put_half(b, 2, -1.0f);
      const size_t qh = with_min ? 4 : 2, qs = qh + 4;
      const uint32_t bits = (1u << 3) | (1u << 20);
      std::memcpy(b.data() + qh, &bits, 4);
      b[qs + 3] = 0x21;
      b[qs + 4] = 0x5F;
      const auto y = dq(with_min ? DType::Q5_1 : DType::Q5_0, b);
      if (!with_min) {
        CHECK(y[3] == 0.5f);    // q = 1 | 16 = 17: 0.5 * (17 - 16)
        CHECK(y[19] == -7.0f);  // bit 19 clear: q = 2: 0.5 * (2 - 16)
        CHECK(y[4] == -0.5f);   // q = 15: 0.5 * (15 - 16)
        CHECK(y[20] == 2.5f);   // bit 20 set: q = 5 | 16 = 21: 0.5 * 5
      } else {
        CHECK(y[3] == 7.5f);   // 0.5 * 17 - 1
        CHECK(y[20] == 9.5f);  // 0.5 * 21 - 1
      }
    }
  }
  SECTION("IQ4_NL: nibbles index the non-uniform levels") {
    Block b(18, 0);
    put_half(b, 0, 0.5f);
    b[2] = 0x0F;
    const auto y = dq(DType::IQ4_NL, b);
    CHECK(y[0] == 56.5f);    // 0.5 * 113 (level 15)
    CHECK(y[16] == -63.5f);  // 0.5 * -127 (level 0)
    CHECK(y[1] == -63.5f);
  }
}

TEST_CASE("k-quants of 256: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K", "[quant]") {
  SECTION("Q2_K: element 165 = half 1, pass 1 (bits 2-3), first group of the pass (10)") {
    Block b(84, 0);
    put_half(b, 80, 0.5f);   // d
    put_half(b, 82, 0.25f);  // dmin
    b[10] = 0x23;            // group 10: scale 3, min 2
    b[0] = 0x11;             // group 0: scale 1, min 1
    b[16 + 37] = 0x08;       // qs[32 * half + l] = qs[37]: bits 2-3 = 2
    b[16 + 0] = 0x03;
    const auto y = dq(DType::Q2_K, b);
    CHECK(y[165] == 2.5f);  // 0.5 * 3 * 2 - 0.25 * 2
    CHECK(y[0] == 1.25f);   // 0.5 * 1 * 3 - 0.25 * 1
    CHECK(y[229] == 0.0f);  // pass 3 of the same byte: bits 6-7 = 0, group 14 all zero
  }
  SECTION("Q3_K: signed 6-bit scales, the third bit from hmask") {
    Block b(110, 0);
    put_half(b, 108, 0.5f);
    // Group 10's scale 35 (= 3 after -32): low 4 bits from the high nibble of scales[2],
    // top 2 from scales[8 + 10 % 4] at bit 2 * (10 / 4) = 4.
    b[96 + 2] = 0x30;
    b[96 + 10] = 0x20;
    b[32 + 37] = 0x08;  // element 165: qs[37] bits 2-3 = 2
    b[5] = 0x20;        // hmask[5] bit 1 + 4 = 5 set: nothing subtracted for element 165
    const auto y = dq(DType::Q3_K, b);
    CHECK(y[165] == 3.0f);  // 0.5 * 3 * 2
    // Element 37 (half 0, pass 1, group 2): scale bits all 0 -> -32; q2 = 0; hmask[5]
    // bit 1 clear -> -4: 0.5 * -32 * -4.
    CHECK(y[37] == 64.0f);
  }
  SECTION("Q4_K and Q5_K: packed 6-bit scales and mins") {
    for (bool five : {false, true}) {
      Block b(five ? 176 : 144, 0);
      put_half(b, 0, 0.5f);
      put_half(b, 2, 0.25f);
      // Group 1: scale s[1] & 63 = 3, min s[5] & 63 = 2. Group 5: scale (s[9] & 15) |
      // (s[1] >> 6) << 4 = 1 | 16 = 17, min (s[9] >> 4) | (s[5] >> 6) << 4 = 5 | 32 = 37.
      b[4 + 1] = 0x43;
      b[4 + 5] = 0x82;
      b[4 + 9] = 0x51;
      const size_t qs = five ? 48 : 16, qh = 16;
      b[qs + 8] = 0x9A;            // element 40: chunk 0, second group (1), high nibble 9
      b[qs + 71] = 0x40;           // element 167: chunk 2, second group (5), high nibble 4
      if (five) b[qh + 7] = 0x20;  // bit 5 of qh[7]: element 167 gets + 16
      const auto y = dq(five ? DType::Q5_K : DType::Q4_K, b);
      CHECK(y[40] == 13.0f);  // 0.5 * 3 * 9 - 0.25 * 2
      if (!five)
        CHECK(y[167] == 24.75f);  // 0.5 * 17 * 4 - 0.25 * 37
      else
        CHECK(y[167] == 160.75f);  // 0.5 * 17 * 20 - 0.25 * 37
    }
  }
  SECTION("Q6_K: 4 + 2 bits, int8 scales per 16") {
    Block b(210, 0);
    put_half(b, 208, 0.5f);
    // Element 212: half 1, k = 2 (high nibble of ql[64 + 20]), bits 4-5 of qh[32 + 20],
    // group 8 + 2 * 2 + 20 / 16 = 13.
    b[84] = 0x70;
    b[128 + 52] = 0x30;
    b[192 + 13] = uint8_t(int8_t(-2));
    // Element 5: half 0, k = 0: low nibble of ql[5], bits 0-1 of qh[5], group 0.
    b[5] = 0x0C;
    b[128 + 5] = 0x01;
    b[192 + 0] = 3;
    const auto y = dq(DType::Q6_K, b);
    CHECK(y[212] == -23.0f);  // q = 7 | 3 << 4 = 55: 0.5 * -2 * (55 - 32)
    CHECK(y[5] == -6.0f);     // q = 12 | 1 << 4 = 28: 0.5 * 3 * (28 - 32)
  }
}

TEST_CASE("a quantized tensor's rows: row_bytes, rows_to_f32 and row views", "[quant]") {
  // 2 rows x 64 columns of Q8_0: 2 blocks per row, 68 bytes per row.
  Block b(4 * 34, 0);
  for (int blk = 0; blk < 4; ++blk) {
    put_half(b, size_t(34 * blk), float(blk + 1));
    b[size_t(34 * blk + 2)] = 1;  // first element of each block = d
  }
  Tensor t;
  t.name = "w";
  t.dtype = DType::Q8_0;
  t.rows = 2;
  t.cols = 64;
  t.data = reinterpret_cast<const std::byte*>(b.data());
  CHECK(t.bytes() == 136);
  std::vector<float> row(64);
  t.rows_to_f32(1, 1, row.data());
  CHECK(row[0] == 3.0f);   // block 2 (row 1's first) has d = 3
  CHECK(row[32] == 4.0f);  // block 3
  const Tensor v = row_view(t, 1, 1, "second row");
  v.rows_to_f32(0, 1, row.data());
  CHECK(row[32] == 4.0f);
}
