// One token's products on stored weights (stored_gemv.hpp): the portable row dots, the
// dispatch to the AVX2 ones, and the rows split over the threads.
#include "kvscope/runtime/stored_gemv.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kvscope/io/error.hpp"
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

// Q8_0 [d f16][32 int8] or Q4_0 [d f16][16 bytes: element j low nibble, j + 16 high; q - 8].
float dot_q_int8(DType t, const std::byte* row, const int8_t* qx, const float* dx, int64_t blocks) {
  const size_t bb = dtype_block_bytes(t);
  float s = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    const std::byte* blk = row + size_t(b) * bb;
    const int8_t* x = qx + kQ8Block * b;
    int32_t sum = 0;
    if (t == DType::Q8_0) {
      for (int i = 0; i < 32; ++i) sum += int32_t(int8_t(blk[2 + i])) * x[i];
    } else {
      for (int j = 0; j < 16; ++j) {
        const int v = int(uint8_t(blk[2 + j]));
        sum += ((v & 15) - 8) * x[j] + ((v >> 4) - 8) * x[j + 16];
      }
    }
    s += f16_to_f32(u16_at(blk)) * dx[b] * float(sum);
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

bool integer_dot(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0;
}

void prepare_activation(DType t, const float* x, int64_t in, GemvActivation& a) {
  a.f32 = x;
  a.q8.clear();
  if (!integer_dot(t)) return;
  KV_ASSERT(in % kQ8Block == 0);
  // A NaN or infinity has no int8 form: such an x takes the float path, which carries it
  // into y as the widened product would.
  for (int64_t i = 0; i < in; ++i)
    if (!std::isfinite(x[i])) return;
  a.q8.resize(size_t(in));
  a.d8.resize(size_t(in / kQ8Block));
  for (int64_t b = 0; b < in / kQ8Block; ++b) {
    const float* xb = x + kQ8Block * b;
    float amax = 0;
    for (int i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::abs(xb[i]));
    const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
    a.d8[size_t(b)] = d;
    for (int i = 0; i < kQ8Block; ++i)
      a.q8[size_t(kQ8Block * b + i)] = int8_t(std::lround(xb[i] * id));  // in [-127, 127]
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
    case DType::Q8_0:
      if (a.q8.empty()) return dot_blocks(W.dtype, row, a.f32, n, simd);
      return simd ? stored_avx2::dot_q8_0(row, a.q8.data(), a.d8.data(), n / kQ8Block)
                  : dot_q_int8(W.dtype, row, a.q8.data(), a.d8.data(), n / kQ8Block);
    case DType::Q4_0:
      if (a.q8.empty()) return dot_blocks(W.dtype, row, a.f32, n, simd);
      return simd ? stored_avx2::dot_q4_0(row, a.q8.data(), a.d8.data(), n / kQ8Block)
                  : dot_q_int8(W.dtype, row, a.q8.data(), a.d8.data(), n / kQ8Block);
    default:
      return dot_blocks(W.dtype, row, a.f32, n, simd);
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
