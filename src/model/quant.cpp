// ggml's block formats, as GGUF files store them (layouts in ggml's ggml-common.h; every
// scale is an IEEE half, every multi-byte field little-endian), read as integer levels
// (block_levels.hpp) and dequantized from those. Each reader fills one block's levels in
// row order.
#include <cstring>

#include "kvscope/io/error.hpp"
#include "kvscope/model/block_levels.hpp"

namespace kvscope {

const int8_t kIq4nlLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                 1,    13,   25,  38,  53,  69,  89,  113};

namespace {

using u8 = uint8_t;

float half_at(const u8* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// A block of one group with scale 1 and no min (the legacy types without a min).
void one_group(BlockLevels& L, float d) {
  L.group = 32;
  L.d = d;
  L.dmin = 0;
  L.scale[0] = 1;
  L.min[0] = 0;
}

// x = d q + m as d 1 q - m (-1), so the dequantized value is the same float.
void one_group_with_min(BlockLevels& L, float d, float m) {
  one_group(L, d);
  L.dmin = m;
  L.min[0] = -1;
}

// Q8_0 [d f16][q int8 x32]: x = d * q.
void q8_0(const u8* b, BlockLevels& L) {
  one_group(L, half_at(b));
  std::memcpy(L.q, b + 2, 32);
}

// Q4_0 [d][16 bytes]: byte j holds element j (low nibble) and j + 16 (high); x = d (q - 8).
// Q4_1 [d][m][16 bytes]: the same nibbles, x = d q + m.
void q4(const u8* b, BlockLevels& L, bool with_min) {
  if (with_min)
    one_group_with_min(L, half_at(b), half_at(b + 2));
  else
    one_group(L, half_at(b));
  const u8* qs = b + (with_min ? 4 : 2);
  const int off = with_min ? 0 : 8;
  for (int j = 0; j < 16; ++j) {
    L.q[j] = int8_t((qs[j] & 15) - off);
    L.q[j + 16] = int8_t((qs[j] >> 4) - off);
  }
}

// Q5_0 [d][qh u32][16 bytes] / Q5_1 [d][m][qh][16 bytes]: the nibbles as in Q4, plus a
// fifth bit for element i in bit i of qh; x = d (q - 16) or d q + m.
void q5(const u8* b, BlockLevels& L, bool with_min) {
  if (with_min)
    one_group_with_min(L, half_at(b), half_at(b + 2));
  else
    one_group(L, half_at(b));
  const u8* p = b + (with_min ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, p, 4);
  const u8* qs = p + 4;
  const int off = with_min ? 0 : 16;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 15) | int(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1u) << 4);
    L.q[j] = int8_t(lo - off);
    L.q[j + 16] = int8_t(hi - off);
  }
}

// IQ4_NL [d][16 bytes]: nibbles as in Q4_0, mapped through a fixed non-uniform table.
void iq4_nl(const u8* b, BlockLevels& L) {
  one_group(L, half_at(b));
  for (int j = 0; j < 16; ++j) {
    L.q[j] = kIq4nlLevels[b[2 + j] & 15];
    L.q[j + 16] = kIq4nlLevels[b[2 + j] >> 4];
  }
}

// Q2_K [scales 16][qs 64][d][dmin]: 16 groups of 16. Byte s of `scales` is group s's
// scale (low nibble, times d) and min (high nibble, times dmin). Each half of 128 elements
// reads 32 bytes of qs four times, two bits at a time (shift 0, 2, 4, 6); within one pass
// the first 16 bytes feed one group and the next 16 the following group.
void q2_k(const u8* b, BlockLevels& L) {
  const u8* sc = b;
  const u8* qs = b + 16;
  L.group = 16;
  L.d = half_at(b + 80);
  L.dmin = half_at(b + 82);
  for (int g = 0; g < 16; ++g) {
    L.scale[g] = int16_t(sc[g] & 15);
    L.min[g] = int16_t(sc[g] >> 4);
  }
  int8_t* y = L.q;
  for (int half = 0; half < 2; ++half)
    for (int pass = 0; pass < 4; ++pass)
      for (int l = 0; l < 32; ++l) *y++ = int8_t((qs[32 * half + l] >> (2 * pass)) & 3);
}

}  // namespace

// Q3_K's scales are signed 6-bit (value - 32): group i takes its low 4 bits from
// scales[i] (i < 8) or the high nibble of scales[i - 8], and its top 2 bits from byte
// 8 + i % 4 at bit 2 (i / 4).
void q3_k_scales(const uint8_t* s, int8_t sc[16]) {
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (s[i] & 15) : (s[i - 8] >> 4);
    const int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    sc[i] = int8_t((low | (high << 4)) - 32);
  }
}

namespace {

// Q3_K [hmask 32][qs 64][scales 12][d]: 16 groups of 16 with the scales above. Two bits
// per element as in Q2_K, and a third from hmask: bit `pass + 4 half` of hmask[l] (l the
// element's place among the pass's 32); a clear bit subtracts 4.
void q3_k(const u8* b, BlockLevels& L) {
  const u8* hm = b;
  const u8* qs = b + 32;
  L.group = 16;
  L.d = half_at(b + 108);
  L.dmin = 0;
  int8_t sc[16];
  q3_k_scales(b + 96, sc);
  for (int g = 0; g < 16; ++g) {
    L.scale[g] = sc[g];
    L.min[g] = 0;
  }
  int8_t* y = L.q;
  for (int half = 0; half < 2; ++half)
    for (int pass = 0; pass < 4; ++pass) {
      const u8 bit = u8(1u << (pass + 4 * half));
      for (int l = 0; l < 32; ++l)
        *y++ = int8_t(int((qs[32 * half + l] >> (2 * pass)) & 3) - ((hm[l] & bit) ? 0 : 4));
    }
}

// Q4_K [d][dmin][scales 12][qs 128] and Q5_K [d][dmin][scales 12][qh 32][qs 128]: 8
// groups of 32, x = d sc q - dmin mn. Each 64 elements read 32 bytes of qs: low nibbles for
// the first group, high nibbles for the second; Q5_K's fifth bit of element l of group g
// is bit g of qh[l].
void q45_k(const u8* b, BlockLevels& L, bool five) {
  L.group = 32;
  L.d = half_at(b);
  L.dmin = half_at(b + 2);
  uint8_t sc[8], mn[8];
  k4_scales_mins(b + 4, sc, mn);
  for (int g = 0; g < 8; ++g) {
    L.scale[g] = sc[g];
    L.min[g] = mn[g];
  }
  const u8* qh = b + 16;
  const u8* qs = b + (five ? 48 : 16);
  int8_t* y = L.q;
  for (int g = 0; g < 8; ++g)
    for (int l = 0; l < 32; ++l) {
      const u8 byte = qs[32 * (g / 2) + l];
      int q = g % 2 == 0 ? (byte & 15) : (byte >> 4);
      if (five && (qh[l] >> g) & 1) q += 16;
      *y++ = int8_t(q);
    }
}

// Q6_K [ql 128][qh 64][scales int8 16][d]: 16 groups of 16, x = d scale (q - 32) with q
// 6 bits: 4 from ql, 2 from qh. Each half of 128 elements uses 64 bytes of ql and 32 of
// qh: element l + 32 k (l < 32, k = 0..3) takes the low (k even) or high (k odd) nibble of
// ql[l + 32 (k % 2)] and bits 2k..2k+1 of qh[l]; its group is 8 half + 2 k + l / 16.
void q6_k(const u8* b, BlockLevels& L) {
  L.group = 16;
  L.d = half_at(b + 208);
  L.dmin = 0;
  for (int g = 0; g < 16; ++g) {
    L.scale[g] = int8_t(b[192 + g]);
    L.min[g] = 0;
  }
  for (int half = 0; half < 2; ++half) {
    const u8* ql = b + 64 * half;
    const u8* qh = b + 128 + 32 * half;
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const u8 lowbyte = ql[l + 32 * (k % 2)];
        const int low = k < 2 ? (lowbyte & 15) : (lowbyte >> 4);
        L.q[128 * half + 32 * k + l] = int8_t((low | (((qh[l] >> (2 * k)) & 3) << 4)) - 32);
      }
  }
}

}  // namespace

void block_levels(DType t, const std::byte* block, BlockLevels& L) {
  const u8* b = reinterpret_cast<const u8*>(block);
  switch (t) {
    case DType::Q8_0:
      return q8_0(b, L);
    case DType::Q4_0:
      return q4(b, L, false);
    case DType::Q4_1:
      return q4(b, L, true);
    case DType::Q5_0:
      return q5(b, L, false);
    case DType::Q5_1:
      return q5(b, L, true);
    case DType::IQ4_NL:
      return iq4_nl(b, L);
    case DType::Q2_K:
      return q2_k(b, L);
    case DType::Q3_K:
      return q3_k(b, L);
    case DType::Q4_K:
      return q45_k(b, L, false);
    case DType::Q5_K:
      return q45_k(b, L, true);
    case DType::Q6_K:
      return q6_k(b, L);
    default:
      throw Error(fmt::format("dequantize: {} is not a block format", dtype_name(t)));
  }
}

void dequantize_blocks(DType t, const std::byte* src, int64_t n_blocks, float* dst) {
  const size_t bb = dtype_block_bytes(t);
  const int64_t be = dtype_block(t);
  BlockLevels L;
  for (int64_t i = 0; i < n_blocks; ++i, src += bb, dst += be) {
    block_levels(t, src, L);
    for (int64_t s = 0; s < be; s += L.group) {
      const int g = int(s / L.group);
      const float dl = L.d * float(L.scale[g]), ml = L.dmin * float(L.min[g]);
      for (int l = 0; l < L.group; ++l) dst[s + l] = dl * float(L.q[s + l]) - ml;
    }
  }
}

}  // namespace kvscope
