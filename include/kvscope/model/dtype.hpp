// Element types of stored tensors and their widening to float32.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace kvscope {

// F32/F16/BF16: one element per "block". The others are ggml's block quantizations (GGUF
// files): a block of 32 (legacy, IQ4_NL) or 256 (k-quants) elements along a row, stored as
// scales and packed integers; see quant.cpp for each layout.
enum class DType {
  F32,
  F16,
  BF16,
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  IQ4_NL
};

std::string_view dtype_name(DType t);
int64_t dtype_block(DType t);       // elements per block (1 for F32/F16/BF16)
size_t dtype_block_bytes(DType t);  // bytes per block
bool dtype_quantized(DType t);      // a block format (dtype_block > 1)
// Bytes of one stored element; only for F32/F16/BF16 (asserts otherwise).
size_t dtype_size(DType t);
// Bytes of one row of `cols` elements (cols a multiple of dtype_block).
inline size_t row_bytes(DType t, int64_t cols) {
  return size_t(cols / dtype_block(t)) * dtype_block_bytes(t);
}

inline float bf16_to_f32(uint16_t h) {
  return std::bit_cast<float>(uint32_t(h) << 16);
}

// IEEE half -> float, exact for normals, subnormals, infinities and NaN.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    // subnormal: value = mant * 2^-24
    const float v = float(mant) * 0x1p-24f;
    return (h & 0x8000u) ? -v : v;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

// Round-to-nearest-even float -> IEEE half, as a C cast to _Float16 does (overflow to Inf,
// gradual underflow, NaN stays a quiet NaN). Portable: clang 14 has no _Float16 on x86-64.
inline uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to Inf
  if (ax >= 0x38800000u) {  // a normal half (>= 2^-14): rebias 127 -> 15, round 13 bits
    const uint32_t a = ax - 0x38000000u;
    return uint16_t(sign | ((a + 0xfffu + ((a >> 13) & 1u)) >> 13));
  }
  // Subnormal halves are multiples of 2^-24: scaling by 2^24 is exact, and rint rounds to
  // nearest even in the default rounding mode (1024 becomes the smallest normal, 0x400).
  const float scaled = std::bit_cast<float>(ax) * 0x1p24f;
  return uint16_t(sign | uint32_t(__builtin_rintf(scaled)));
}

// Round-to-nearest-even float -> bf16 (used by writers of synthetic checkpoints).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Widen n elements stored at `src` (any alignment) in dtype `t` into dst; for a block
// format n is a multiple of dtype_block(t) and src the start of a block.
void widen_to_f32(DType t, const std::byte* src, size_t n, float* dst);
// The block formats' dequantizers (quant.cpp): n_blocks blocks from src into dst.
void dequantize_blocks(DType t, const std::byte* src, int64_t n_blocks, float* dst);
// ggml's reference quantizers (quantize.cpp) for the types llama.cpp's KV cache takes:
// q8_0, q5_1, q5_0, q4_1, q4_0 and iq4_nl. n_blocks blocks of 32 floats from src into dst
// (n_blocks * dtype_block_bytes(t) bytes); throws for any other type.
bool dtype_quantizable(DType t);
void quantize_blocks(DType t, const float* src, int64_t n_blocks, std::byte* dst);

}  // namespace kvscope
