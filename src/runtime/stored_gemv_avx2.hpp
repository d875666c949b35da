// AVX2 (+FMA; +F16C for F16 and the block types, whose scales are halves) row dot products
// of stored weights (stored_gemv.hpp), compiled function by function for those
// instructions; callers check the support functions first.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvscope/model/dtype.hpp"

namespace kvscope::stored_avx2 {

bool supported();       // AVX2 and FMA (false when not built for x86)
bool supported_f16c();  // and F16C
// <w, x> over n elements; w stored as f32 / bf16 / f16 bytes (any alignment).
float dot_f32(const std::byte* w, const float* x, int64_t n);
float dot_bf16(const std::byte* w, const float* x, int64_t n);
float dot_f16(const std::byte* w, const float* x, int64_t n);

// A row of `blocks` blocks of one block type against the int8 activation: qx [blocks *
// block], dx [blocks] (one scale per block of the weights), sum16 [blocks * block / 16].
using QuantDot = float (*)(const std::byte* row, const int8_t* qx, const float* dx,
                           const int16_t* sum16, int64_t blocks);
// The AVX2 kernel for block type t (every block format kvscope loads); needs
// supported_f16c().
QuantDot quant_dot(DType t);

}  // namespace kvscope::stored_avx2
