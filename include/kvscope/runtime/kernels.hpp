// Small single-threaded kernels: the matrix-vector products of a decoding step (a
// query's attention over a head's cache among them), and softmax and SwiGLU, which
// prefill uses too. On small models a decoding step is a few hundred of these calls on
// 8- to 512-wide operands, so per-call overhead decides the speed: on x86 with AVX2 and FMA
// (checked once at run time) they run hand-written 8-wide code; elsewhere Eigen's vectorised
// versions. Matrices are row-major.
#pragma once

#include <cstdint>

namespace kvscope::kernels {

// y[out] = alpha * W[out, in] x[in] + beta * y   (beta 0: y is not read)
void gemv(const float* W, int out, int in, const float* x, float* y, float alpha = 1.0f,
          float beta = 0.0f);

// y[n] = sum_j p[j] * V[j, :]   V: [m, n]   (the attention output V^T p)
void gemv_t(const float* V, int m, int n, const float* p, float* y);

// In place: x[n] <- softmax(x) (n >= 1, finite maximum). With normalize false x is left
// as exp(x - max x) and the caller scales by the returned 1 / sum (attention scales the
// hd-wide output row instead of the n weights). Returns 1 / sum either way.
float softmax(float* x, int n, bool normalize = true);

// gate[n] <- silu(gate) * up = gate / (1 + e^-gate) * up   (SwiGLU)
void silu_mul(float* gate, const float* up, int64_t n);

// Whether the AVX2 kernels are in use; use_simd(false) switches to the portable ones
// (tests compare the two; the KVSCOPE_SIMD=0 environment variable does it for a run).
bool simd_active();
void use_simd(bool on);

}  // namespace kvscope::kernels
