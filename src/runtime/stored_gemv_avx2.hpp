// AVX2 (+FMA, +F16C for F16) row dot products of stored weights (stored_gemv.hpp), compiled
// function by function for those instructions; callers check the support functions first.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvscope::stored_avx2 {

bool supported();       // AVX2 and FMA (false when not built for x86)
bool supported_f16c();  // and F16C
// <w, x> over n elements; w stored as f32 / bf16 / f16 bytes (any alignment).
float dot_f32(const std::byte* w, const float* x, int64_t n);
float dot_bf16(const std::byte* w, const float* x, int64_t n);
float dot_f16(const std::byte* w, const float* x, int64_t n);
// Sum over blocks b of d_w(b) d_x(b) <q_w(b), q_x(b)>: a Q8_0 / Q4_0 row of `blocks` blocks
// against the int8 activation qx [blocks * 32] with scales dx [blocks].
float dot_q8_0(const std::byte* row, const int8_t* qx, const float* dx, int64_t blocks);
float dot_q4_0(const std::byte* row, const int8_t* qx, const float* dx, int64_t blocks);

}  // namespace kvscope::stored_avx2
