// One token's matrix-vector products on weights as they are stored (BF16, F16, ggml block
// quantizations): dot products straight on the stored rows, with no float32 copy of the
// matrix. Decoding a token reads every weight once, so widening them first (writing and
// re-reading 4 to 8 times the stored bytes as float32) is what made quantized and BF16
// decoding slow. As in ggml, every block type is multiplied in integers against the
// activation quantized to 8 bits once per product (blocks of 32 for the 32-element types,
// of 256 for the k-quants; scale max|x| / 127), reading each block's integer levels
// (model/block_levels.hpp); BF16 and F16 are converted inside the dot product. AVX2/FMA/
// F16C versions are chosen at run time (kernels::simd_active()), and rows are split over
// the OpenMP threads once per product.
#pragma once

#include <cstdint>
#include <vector>

#include "kvscope/model/tensor.hpp"

namespace kvscope {

// x [in] prepared for the dot products of one product: as given, and (for block-quantized
// weights) quantized to int8 in blocks of `block` with one float scale per block and the
// sum of each 16 quantized values (the k-quants' mins and offsets need them).
struct GemvActivation {
  const float* f32 = nullptr;
  int64_t block = 0;           // 32, 256, or 0 when x is used as floats
  std::vector<int8_t> q8;      // [in]
  std::vector<float> d8;       // [in / block]
  std::vector<int16_t> sum16;  // [in / 16]
};

// Elements per scale of the int8 activation for weights of dtype t: 32 for Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1 and IQ4_NL, 256 for Q2_K..Q6_K, 0 for the element types.
int64_t activation_block(DType t);

// Fills a: keeps x and, when t's rows are multiplied in integers, quantizes it (a NaN or
// infinite x is left in floats: it has no int8 form).
void prepare_activation(DType t, const float* x, int64_t in, GemvActivation& a);

// <row r of W, x> for the prepared activation (r: logical row; W's row_order applies).
float stored_row_dot(const Tensor& W, int64_t r, const GemvActivation& a);

// y [W.rows] = W x + beta y (beta 0: y is not read); x [W.cols].
void stored_gemv(const Tensor& W, const float* x, float* y, float beta);

}  // namespace kvscope
