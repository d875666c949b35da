// Dequantization of ggml's block formats, as GGUF files store them (layouts in ggml's
// ggml-common.h; every scale is an IEEE half, every multi-byte field little-endian). Each
// function turns one block into its 32 or 256 floats in row order.
#include <cstring>

#include "kvscope/io/error.hpp"
#include "kvscope/model/dtype.hpp"

namespace kvscope {

namespace {

using u8 = uint8_t;

float half_at(const u8* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Q8_0 [d f16][q int8 x32]: x = d * q.
void q8_0(const u8* b, float* y) {
  const float d = half_at(b);
  for (int i = 0; i < 32; ++i) y[i] = d * float(int8_t(b[2 + i]));
}

// Q4_0 [d][16 bytes]: byte j holds element j (low nibble) and j + 16 (high); x = d (q - 8).
// Q4_1 [d][m][16 bytes]: the same nibbles, x = d q + m.
void q4(const u8* b, float* y, bool with_min) {
  const float d = half_at(b), m = with_min ? half_at(b + 2) : 0.0f;
  const u8* qs = b + (with_min ? 4 : 2);
  const int off = with_min ? 0 : 8;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float((qs[j] & 15) - off) + m;
    y[j + 16] = d * float((qs[j] >> 4) - off) + m;
  }
}

// Q5_0 [d][qh u32][16 bytes] / Q5_1 [d][m][qh][16 bytes]: the nibbles as in Q4, plus a
// fifth bit for element i in bit i of qh; x = d (q - 16) or d q + m.
void q5(const u8* b, float* y, bool with_min) {
  const float d = half_at(b), m = with_min ? half_at(b + 2) : 0.0f;
  const u8* p = b + (with_min ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, p, 4);
  const u8* qs = p + 4;
  const int off = with_min ? 0 : 16;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 15) | int(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * float(lo - off) + m;
    y[j + 16] = d * float(hi - off) + m;
  }
}

// IQ4_NL [d][16 bytes]: nibbles as in Q4_0, mapped through a fixed non-uniform table.
void iq4_nl(const u8* b, float* y) {
  static const int8_t kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};
  const float d = half_at(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(kLevels[b[2 + j] & 15]);
    y[j + 16] = d * float(kLevels[b[2 + j] >> 4]);
  }
}

// Q2_K [scales 16][qs 64][d][dmin]: 16 groups of 16. Byte s of `scales` is group s's
// scale (low nibble, times d) and min (high nibble, times dmin). Each half of 128 elements
// reads 32 bytes of qs four times, two bits at a time (shift 0, 2, 4, 6); within one pass
// the first 16 bytes feed one group and the next 16 the following group.
void q2_k(const u8* b, float* y) {
  const u8* sc = b;
  const u8* qs = b + 16;
  const float d = half_at(b + 80), dmin = half_at(b + 82);
  int g = 0;
  for (int half = 0; half < 2; ++half)
    for (int pass = 0; pass < 4; ++pass)
      for (int part = 0; part < 2; ++part, ++g) {
        const float dl = d * float(sc[g] & 15), ml = dmin * float(sc[g] >> 4);
        const u8* q = qs + 32 * half + 16 * part;
        for (int l = 0; l < 16; ++l) *y++ = dl * float((q[l] >> (2 * pass)) & 3) - ml;
      }
}

// Q3_K [hmask 32][qs 64][scales 12][d]: 16 groups of 16 with signed 6-bit scales
// (value - 32): group i takes its low 4 bits from scales[i] (i < 8) or the high nibble of
// scales[i - 8], and its top 2 bits from byte 8 + i % 4 at bit 2 (i / 4). Two bits per
// element as in Q2_K, and a third from hmask: bit `pass + 4 half` of hmask[l] (plus 16
// for the second group of a pass); a clear bit subtracts 4.
void q3_k(const u8* b, float* y) {
  const u8* hm = b;
  const u8* qs = b + 32;
  const u8* s = b + 96;
  const float d = half_at(b + 108);
  int scale[16];
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (s[i] & 15) : (s[i - 8] >> 4);
    const int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    scale[i] = (low | (high << 4)) - 32;
  }
  int g = 0;
  for (int half = 0; half < 2; ++half)
    for (int pass = 0; pass < 4; ++pass) {
      const u8 bit = u8(1u << (pass + 4 * half));
      for (int part = 0; part < 2; ++part, ++g) {
        const float dl = d * float(scale[g]);
        const u8* q = qs + 32 * half + 16 * part;
        const u8* h = hm + 16 * part;
        for (int l = 0; l < 16; ++l)
          *y++ = dl * float(int((q[l] >> (2 * pass)) & 3) - ((h[l] & bit) ? 0 : 4));
      }
    }
}

// The 6-bit scale and min of group j (0..7) of Q4_K / Q5_K, packed in 12 bytes: groups
// 0-3 in the low 6 bits of bytes j and j + 4; groups 4-7 take their low 4 bits from byte
// j + 4 (scale: low nibble, min: high nibble) and their top 2 bits from the top bits of
// bytes j - 4 (scale) and j (min).
void scale_min_k4(int j, const u8* s, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K [d][dmin][scales 12][qs 128] and Q5_K [d][dmin][scales 12][qh 32][qs 128]: 8
// groups of 32, x = d sc q - dmin mn. Each 64 elements read 32 bytes of qs: low nibbles for
// the first group, high nibbles for the second; Q5_K's fifth bit of element l of group g
// is bit g of qh[l].
void q45_k(const u8* b, float* y, bool five) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const u8* s = b + 4;
  const u8* qh = b + 16;
  const u8* qs = b + (five ? 48 : 16);
  for (int c = 0; c < 4; ++c) {
    for (int part = 0; part < 2; ++part) {
      const int g = 2 * c + part;
      int sc, mn;
      scale_min_k4(g, s, &sc, &mn);
      const float dl = d * float(sc), ml = dmin * float(mn);
      for (int l = 0; l < 32; ++l) {
        int q = part == 0 ? (qs[32 * c + l] & 15) : (qs[32 * c + l] >> 4);
        if (five && (qh[l] >> g) & 1) q += 16;
        *y++ = dl * float(q) - ml;
      }
    }
  }
}

// Q6_K [ql 128][qh 64][scales int8 16][d]: 16 groups of 16, x = d scale (q - 32) with q
// 6 bits: 4 from ql, 2 from qh. Each half of 128 elements uses 64 bytes of ql and 32 of
// qh: element l + 32 k (l < 32, k = 0..3) takes the low (k even) or high (k odd) nibble of
// ql[l + 32 (k % 2)] and bits 2k..2k+1 of qh[l]; its group is 8 half + 2 k + l / 16.
void q6_k(const u8* b, float* y) {
  const float d = half_at(b + 208);
  for (int half = 0; half < 2; ++half) {
    const u8* ql = b + 64 * half;
    const u8* qh = b + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * half;
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        const u8 lowbyte = ql[l + 32 * (k % 2)];
        const int low = k < 2 ? (lowbyte & 15) : (lowbyte >> 4);
        const int q = (low | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
        y[128 * half + 32 * k + l] = d * float(sc[2 * k + l / 16]) * float(q);
      }
  }
}

}  // namespace

void dequantize_blocks(DType t, const std::byte* src, int64_t n_blocks, float* dst) {
  const u8* b = reinterpret_cast<const u8*>(src);
  const size_t bb = dtype_block_bytes(t);
  const int64_t be = dtype_block(t);
  for (int64_t i = 0; i < n_blocks; ++i, b += bb, dst += be) {
    switch (t) {
      case DType::Q8_0:
        q8_0(b, dst);
        break;
      case DType::Q4_0:
        q4(b, dst, false);
        break;
      case DType::Q4_1:
        q4(b, dst, true);
        break;
      case DType::Q5_0:
        q5(b, dst, false);
        break;
      case DType::Q5_1:
        q5(b, dst, true);
        break;
      case DType::IQ4_NL:
        iq4_nl(b, dst);
        break;
      case DType::Q2_K:
        q2_k(b, dst);
        break;
      case DType::Q3_K:
        q3_k(b, dst);
        break;
      case DType::Q4_K:
        q45_k(b, dst, false);
        break;
      case DType::Q5_K:
        q45_k(b, dst, true);
        break;
      case DType::Q6_K:
        q6_k(b, dst);
        break;
      default:
        throw Error(fmt::format("dequantize: {} is not a block format", dtype_name(t)));
    }
  }
}

}  // namespace kvscope
