// Numerical building blocks of the forward pass. Matrices are row-major; shapes are
// written beside each argument. All loops over tokens run on the OpenMP pool.
#pragma once

#include <cstdint>

#include "kvscope/model/model_config.hpp"

namespace kvscope {

// Elementwise loops smaller than this run on one thread: a parallel region costs a few
// microseconds on a quiet machine and a scheduler time slice on a busy one.
inline constexpr int64_t kParallelMin = int64_t(1) << 18;
// Decoding GEMVs with fewer weights than this run single-threaded in Eigen; larger ones
// go to OpenBLAS, whose threads help stream big matrices from memory.
inline constexpr int64_t kBlasGemvMin = int64_t(1) << 20;

// y[T, out] = x[T, in] * W[out, in]^T + beta * y   (OpenBLAS sgemm)
void matmul_wt(const float* x, int T, int in, const float* W, int out, float* y, float beta = 0.f);

// y[t, :] = x[t, :] / rms(x[t, :]) * w       x, y: [T, n]; w: [n]; y may alias x
void rmsnorm(const float* x, const float* w, int T, int n, float eps, float* y);

// In place: rotate each head of x [T, n_heads*head_dim] at absolute positions
// pos0..pos0+T-1 by the head_dim/2 frequencies inv_freq (rope_inv_freq). Angles are
// computed in double, so long positions stay accurate.
void apply_rope(float* x, int T, int n_heads, int head_dim, int pos0, const double* inv_freq,
                RopeLayout layout);

// gate[T, n] <- silu(gate) * up
void swiglu(float* gate, const float* up, int64_t n);

// In place softmax of one row of n logits; returns nothing, rows of -inf are an error
// the caller rules out (a causal row always sees at least its own key).
void softmax_row(float* x, int n);

// ALiBi slope of head h of n_heads (Press et al.; geometric for a power of two, the
// interleaved extension otherwise).
float alibi_slope(int h, int n_heads);

}  // namespace kvscope
