// Numerical building blocks of the forward pass. Matrices are row-major; shapes are
// written beside each argument. Loops over tokens run on the OpenMP pool when they are
// big enough to pay for it (worth_threads, src/runtime/parallel.hpp: OpenMP stays out of
// the public headers).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

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

// Several products of the same x: y_i[T, out_i] = x[T, in] * W_i^T + beta_i * y_i. A small
// model's prefill runs them in one parallel region (each thread its rows of all of them)
// instead of one region each.
struct Projection {
  const float* W;  // [out, in]
  int out;
  float* y;  // [T, out]
  float beta = 0.0f;
};
void matmul_wt_many(const float* x, int T, int in, std::span<const Projection> ps);

// y[t, :] = x[t, :] / rms(x[t, :]) * (w_offset + w)    x, y: [T, n]; w: [n]; y may alias x
// (w_offset 1: Gemma's norms, whose stored weight is the deviation from 1)
void rmsnorm(const float* x, const float* w, int T, int n, float eps, float* y,
             float w_offset = 0.0f);

// cos and sin of the rotation of every frequency at positions 0..positions-1, each
// [positions, half] (half = rot_dim / 2 of the inv_freq from rope_inv_freq), multiplied by
// attn_factor (longrope). Angles are computed in double, so long positions stay accurate.
// A RunState keeps one table per kind of layer and extends it as positions grow, so a
// position's angles are computed once, not per call, layer and tensor.
struct RopeAngles {
  int half = 0, positions = 0;
  std::vector<double> inv_freq;  // what the table was made with
  double attn_factor = 1.0;
  std::vector<float> cos, sin;  // [positions, half]
};
// Makes `a` hold positions 0..end-1 for these frequencies (rebuilt when they change:
// longrope switching to its long factors).
void rope_angles(int end, const std::vector<double>& inv_freq, double attn_factor, RopeAngles& a);

// In place: rotate each head of x [T, n_heads*head_dim] (positions pos0..pos0+T-1) by the
// angles of its position. Only the first 2 * a.half entries of each head rotate (partial
// rotary).
void apply_rope(float* x, int T, int n_heads, int head_dim, int pos0, const RopeAngles& a,
                RopeLayout layout);

// gate[T, n] <- silu(gate) * up
void swiglu(float* gate, const float* up, int64_t n);

// gate[T, n] <- gelu_tanh(gate) * up, GELU's tanh approximation (PyTorch's
// gelu(approximate="tanh"), Gemma's gelu_pytorch_tanh)
void geglu_tanh(float* gate, const float* up, int64_t n);

// x[i] <- cap * tanh(x[i] / cap)  (Gemma 2's soft-capping of scores and logits)
void softcap(float* x, int64_t n, float cap);

// ALiBi slope of head h of n_heads (Press et al.; geometric for a power of two, the
// interleaved extension otherwise).
float alibi_slope(int h, int n_heads);

}  // namespace kvscope
