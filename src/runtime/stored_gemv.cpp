// One token's products on stored weights (stored_gemv.hpp): the portable row dots, the
// dispatch to the AVX2 ones, and the rows split over the threads.
#include "kvscope/runtime/stored_gemv.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kvscope/io/error.hpp"
#include "kvscope/model/block_levels.hpp"
#include "kvscope/runtime/kernels.hpp"
#include "parallel.hpp"
#include "stored_gemv_avx2.hpp"

namespace kvscope {

namespace {

constexpr int64_t kQ8Block = 32;  // elements per scale of the int8 activation

uint16_t u16_at(const std::byte* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// Portable dots, in the order the AVX2 ones would be checked against.
float dot_f32(const std::byte* w, const float* x, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, w + 4 * i, 4);
    s += v * x[i];
  }
  return s;
}

float dot_half(DType t, const std::byte* w, const float* x, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = u16_at(w + 2 * i);
    s += (t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h)) * x[i];
  }
  return s;
}

// Any block type through its integer levels (block_levels.hpp): per group, scale times the
// integer dot of levels and int8 activation, minus min times the activation's sum; one
// float step per block. The AVX2 kernels compute the same integers.
float dot_levels(DType t, const std::byte* row, const GemvActivation& a, int64_t blocks) {
  const size_t bb = dtype_block_bytes(t);
  const int64_t be = dtype_block(t);
  BlockLevels L;
  float s = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    block_levels(t, row + size_t(b) * bb, L);
    const int8_t* x = a.q8.data() + be * b;
    const int16_t* s16 = a.sum16.data() + be / 16 * b;
    int64_t main = 0, mins = 0;
    for (int64_t g = 0; g < be / L.group; ++g) {
      int32_t dot = 0, sx = 0;
      for (int64_t l = g * L.group; l < (g + 1) * L.group; ++l) dot += int32_t(L.q[l]) * x[l];
      for (int64_t c = g * L.group / 16; c < (g + 1) * L.group / 16; ++c) sx += s16[c];
      main += int64_t(L.scale[g]) * dot;
      mins += int64_t(L.min[g]) * sx;
    }
    s += a.d8[size_t(b)] * (L.d * float(main) - L.dmin * float(mins));
  }
  return s;
}

// Any other block type: one block at a time widened into `buf` (<= 256 floats) and dotted.
float dot_blocks(DType t, const std::byte* row, const float* x, int64_t n, bool simd) {
  const int64_t be = dtype_block(t);
  const size_t bb = dtype_block_bytes(t);
  alignas(32) float buf[256];
  KV_ASSERT(be <= 256);
  float s = 0;
  for (int64_t i = 0; i < n; i += be) {
    widen_to_f32(t, row + size_t(i / be) * bb, size_t(be), buf);
    s += simd ? stored_avx2::dot_f32(reinterpret_cast<const std::byte*>(buf), x + i, be)
              : dot_f32(reinterpret_cast<const std::byte*>(buf), x + i, be);
  }
  return s;
}

}  // namespace

int64_t activation_block(DType t) {
  if (!dtype_quantized(t)) return 0;
  return dtype_block(t) == 256 ? 256 : kQ8Block;
}

void prepare_activation(DType t, const float* x, int64_t in, GemvActivation& a) {
  a.f32 = x;
  a.block = 0;
  const int64_t qb = activation_block(t);
  if (qb == 0) return;
  KV_ASSERT(in % qb == 0);
  // A NaN or infinity has no int8 form: such an x takes the float path, which carries it
  // into y as the widened product would.
  for (int64_t i = 0; i < in; ++i)
    if (!std::isfinite(x[i])) return;
  a.block = qb;
  a.q8.resize(size_t(in));
  a.d8.resize(size_t(in / qb));
  a.sum16.resize(size_t(in / 16));
  for (int64_t b = 0; b < in / qb; ++b) {
    const float* xb = x + qb * b;
    float amax = 0;
    for (int64_t i = 0; i < qb; ++i) amax = std::max(amax, std::abs(xb[i]));
    const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
    a.d8[size_t(b)] = d;
    for (int64_t i = 0; i < qb; ++i)
      a.q8[size_t(qb * b + i)] = int8_t(std::lround(xb[i] * id));  // in [-127, 127]
  }
  for (int64_t c = 0; c < in / 16; ++c) {
    int sum = 0;
    for (int i = 0; i < 16; ++i) sum += a.q8[size_t(16 * c + i)];
    a.sum16[size_t(c)] = int16_t(sum);  // |sum| <= 16 * 127
  }
}

float stored_row_dot(const Tensor& W, int64_t r, const GemvActivation& a) {
  const int64_t stored = W.row_order ? (*W.row_order)[size_t(r)] : r;
  const std::byte* row = W.data + size_t(stored) * W.row_bytes();
  const int64_t n = W.cols;
  const bool simd = kernels::simd_active();
  switch (W.dtype) {
    case DType::F32:
      return simd ? stored_avx2::dot_f32(row, a.f32, n) : dot_f32(row, a.f32, n);
    case DType::BF16:
      return simd ? stored_avx2::dot_bf16(row, a.f32, n) : dot_half(W.dtype, row, a.f32, n);
    case DType::F16:
      return simd && stored_avx2::supported_f16c() ? stored_avx2::dot_f16(row, a.f32, n)
                                                   : dot_half(W.dtype, row, a.f32, n);
    default: {
      if (a.block == 0) return dot_blocks(W.dtype, row, a.f32, n, simd);
      const int64_t blocks = n / dtype_block(W.dtype);
      if (!simd || !stored_avx2::supported_f16c()) return dot_levels(W.dtype, row, a, blocks);
      return stored_avx2::quant_dot(W.dtype)(row, a.q8.data(), a.d8.data(), a.sum16.data(), blocks);
    }
  }
}

void stored_gemv(const Tensor& W, const float* x, float* y, float beta) {
  GemvActivation a;
  prepare_activation(W.dtype, x, W.cols, a);
  // One parallel region per product, rows split evenly: no barrier per block of rows.
  parallel_for(W.rows, W.rows * W.cols, [&](int64_t r) {
    const float v = stored_row_dot(W, r, a);
    y[r] = beta == 0.0f ? v : v + beta * y[r];
  });
}

}  // namespace kvscope
