// ggml's block formats read as integers: every block type kvscope loads is, group by group,
// x_i = d scale[g] q_i - dmin min[g] with small integers q, scale and min (g = i / group).
// The dequantizer (quant.cpp) turns these into floats, and the one-token products on stored
// weights (runtime/stored_gemv) multiply q in integers against an int8 activation, so one
// function knows each layout's bits and both paths read it.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kvscope/model/dtype.hpp"

namespace kvscope {

struct BlockLevels {
  int group = 32;         // elements per scale: 32 (legacy types, Q4_K, Q5_K) or 16
  float d = 0, dmin = 0;  // the block's float scales (dmin 0 where the type has no min)
  int8_t q[256];          // [dtype_block(t)] integer level of each element
  int16_t scale[16];      // [block / group]
  int16_t min[16];        // [block / group]; Q4_1 / Q5_1 store -1 (x = d q + m: dmin = m)
};

// Reads one block of type t (a block format: Q8_0 ... Q6_K) at `block` (any alignment).
void block_levels(DType t, const std::byte* block, BlockLevels& out);

// The packed scales of the k-quants, shared with the AVX2 kernels (inline: they run once
// per block of 256 weights in the decoding loop).
// Q4_K / Q5_K: the 6-bit scale and min of groups 0-7 from 12 bytes s. Groups 0-3 sit in
// the low 6 bits of bytes j (scale) and j + 4 (min); groups 4-7 take their low 4 bits
// from byte j + 4 (scale: low nibble, min: high nibble) and their top 2 bits from the top
// bits of bytes j - 4 (scale) and j (min). Done four bytes at a time.
inline void k4_scales_mins(const uint8_t* s, uint8_t sc[8], uint8_t mn[8]) {
  static_assert(std::endian::native == std::endian::little, "byte order of the words below");
  uint32_t u[3];
  std::memcpy(u, s, 12);
  const uint32_t sc_lo = u[0] & 0x3f3f3f3fu, mn_lo = u[1] & 0x3f3f3f3fu;
  const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
  const uint32_t mn_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(mn, &mn_lo, 4);
  std::memcpy(mn + 4, &mn_hi, 4);
}
// Q3_K: 16 six-bit scales from 12 bytes, already minus 32 (so in [-32, 31]).
void q3_k_scales(const uint8_t* s12, int8_t sc[16]);

// IQ4_NL's fixed non-uniform levels, indexed by the stored nibble.
extern const int8_t kIq4nlLevels[16];

}  // namespace kvscope
