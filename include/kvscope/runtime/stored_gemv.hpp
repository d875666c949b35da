// One token's matrix-vector products on weights as they are stored (BF16, F16, ggml block
// quantizations): dot products straight on the stored rows, with no float32 copy of the
// matrix. Decoding a token reads every weight once, so widening them first (writing and
// re-reading 4 to 8 times the stored bytes as float32) is what made quantized and BF16
// decoding slow. As in ggml, Q8_0 and Q4_0 rows are multiplied in integers against the
// activation quantized to 8 bits once per product (blocks of 32, scale max|x| / 127);
// BF16 and F16 are converted inside the dot product; the other block types are dequantized
// one block (<= 256 values, in L1) at a time. AVX2/FMA/F16C versions are chosen at run time
// (kernels::simd_active()), and rows are split over the OpenMP threads once per product.
#pragma once

#include <cstdint>
#include <vector>

#include "kvscope/model/tensor.hpp"

namespace kvscope {

// x [in] prepared for the dot products of one product: as given, and (for Q8_0 / Q4_0
// weights) quantized to int8 in blocks of 32 with one float scale per block.
struct GemvActivation {
  const float* f32 = nullptr;
  std::vector<int8_t> q8;  // [in]
  std::vector<float> d8;   // [in / 32]
};

// Fills a: keeps x and, when t's dtype is multiplied in integers, quantizes it.
void prepare_activation(DType t, const float* x, int64_t in, GemvActivation& a);

// Whether rows of dtype t are multiplied in integers against the int8 activation.
bool integer_dot(DType t);

// <row r of W, x> for the prepared activation (r: logical row; W's row_order applies).
float stored_row_dot(const Tensor& W, int64_t r, const GemvActivation& a);

// y [W.rows] = W x + beta y (beta 0: y is not read); x [W.cols].
void stored_gemv(const Tensor& W, const float* x, float* y, float beta);

}  // namespace kvscope
