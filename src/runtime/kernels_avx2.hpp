// AVX2 + FMA versions of the decoding kernels (kernels.hpp), compiled for those
// instructions function by function, so the rest of the program stays portable; callers
// check supported() first.
#pragma once

namespace kvscope::kernels::avx2 {

bool supported();  // this CPU has AVX2 and FMA (false when not built for x86)
void gemv(const float* W, int out, int in, const float* x, float* y, float alpha, float beta);
// false (nothing written) unless n is a multiple of 8
bool gemv_t(const float* V, int m, int n, const float* p, float* y);
float softmax(float* x, int n, bool normalize);
void silu_mul(float* gate, const float* up, long n);

}  // namespace kvscope::kernels::avx2
