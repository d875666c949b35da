// The LLaMA block's operations for training: forward and backward of each, on row-major
// buffers, templated on the scalar (float to train, double for gradient checks). Backward
// functions ADD into their gradient outputs (several uses of one tensor accumulate), and
// follow the runtime forward pass exactly (ops.hpp): same RMSNorm, RoPE layouts and
// frequencies, ALiBi slopes, attention scale 1/sqrt(head_dim), SiLU gate.
#pragma once

#include <cstdint>
#include <span>

#include "kvscope/model/model_config.hpp"

namespace kvscope::train {

// y[T, out] = x[T, in] W[out, in]^T
template <class T>
void matmul_fw(const T* x, int rows, int in, const T* W, int out, T* y);
// dx[T, in] += dy W;  dW[out, in] += dy^T x   (either output may be null)
template <class T>
void matmul_bw(const T* dy, const T* x, int rows, int in, const T* W, int out, T* dx, T* dW);

// Per-group projection, for the compressed keys of a reduced model: for each group j,
// y[:, j*out .. +out] = x[:, j*in .. +in] W_j^T, W_j = W[j*out .. +out, :] ([out, in]).
// x [T, groups*in], W [groups*out, in], y [T, groups*out]. Keys: groups = KV heads,
// in = t*hd, out = hd (k_compress); queries: groups = heads, in = out = hd (q_project).
template <class T>
void group_matmul_fw(const T* x, int rows, int groups, int in, const T* W, int out, T* y);
// dx += dy_j W_j;  dW_j += dy_j^T x_j   (either output may be null)
template <class T>
void group_matmul_bw(const T* dy, const T* x, int rows, int groups, int in, const T* W, int out,
                     T* dx, T* dW);

// y = x * r * g per row, r[t] = 1 / sqrt(mean(x[t]^2) + eps) (kept for backward)
template <class T>
void rmsnorm_fw(const T* x, const T* g, int rows, int n, double eps, T* y, T* r);
template <class T>
void rmsnorm_bw(const T* dy, const T* x, const T* g, const T* r, int rows, int n, T* dx, T* dg);

// In place over x[T, heads * hd] at positions 0..T-1; inverse = true rotates back, which
// is also the backward pass (the rotation is orthogonal).
template <class T>
void rope(T* x, int rows, int heads, int hd, const std::vector<double>& inv_freq, RopeLayout layout,
          bool inverse);

// Causal attention with GQA: query head h reads KV head h / (H / G).
// q[T, H*hd], k, v[T, G*hd] (k after RoPE); probs[H, T, T] kept for backward;
// out[T, H*hd]. alibi: add -slope_h * (i - j) to the logits (slopes of ops.hpp).
template <class T>
void attention_fw(const T* q, const T* k, const T* v, int rows, int H, int G, int hd, bool alibi,
                  T* probs, T* out);
template <class T>
void attention_bw(const T* dout, const T* q, const T* k, const T* v, const T* probs, int rows,
                  int H, int G, int hd, T* dq, T* dk, T* dv);

// g = silu(a) * b, elementwise over n
template <class T>
void swiglu_fw(const T* a, const T* b, int64_t n, T* g);
template <class T>
void swiglu_bw(const T* dg, const T* a, const T* b, int64_t n, T* da, T* db);

// Sum over rows of -log softmax(logits[t])[targets[t]] (targets < 0 are skipped);
// dlogits (may be null) gets the gradient of that sum times `scale`.
template <class T>
double cross_entropy(const T* logits, const int32_t* targets, int rows, int vocab, double scale,
                     T* dlogits);

}  // namespace kvscope::train
