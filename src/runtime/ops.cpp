#include "kvscope/runtime/ops.hpp"
#include "parallel.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kvscope/runtime/kernels.hpp"

namespace kvscope {

namespace {

// Small W, many tokens (a small model's prefill): each thread runs a single-threaded sgemm
// on its own block of rows (OpenBLAS does not thread inside a parallel region). OpenBLAS's
// own threading of such a GEMM synchronises its threads per panel, which on 64-wide
// weights cost more than the split saved.
bool split_by_rows(int T, int64_t weights, int64_t work) {
  return weights < kBlasGemvMin && T >= 32 && worth_threads(work);
}

void sgemm_rows(const float* x, int t0, int n, int in, const Projection& p) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, p.out, in, 1.0f, x + size_t(t0) * in, in,
              p.W, in, p.beta, p.y + size_t(t0) * p.out, p.out);
}

}  // namespace

void matmul_wt(const float* x, int T, int in, const float* W, int out, float* y, float beta) {
  if (T == 1) {  // decoding: a GEMM with one row would pack all of W for nothing
    if (int64_t(out) * in < kBlasGemvMin) {
      // Small W: the single-threaded decoding kernel. OpenBLAS would thread it (past 9216
      // elements), and threading a GEMV this small costs more than it saves.
      kernels::gemv(W, out, in, x, y, 1.0f, beta);
      return;
    }
    cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, in, x, 1, beta, y, 1);
    return;
  }
  const Projection p{W, out, y, beta};
  if (split_by_rows(T, int64_t(out) * in, int64_t(T) * out * in)) {
    matmul_wt_many(x, T, in, {&p, 1});
    return;
  }
  sgemm_rows(x, 0, T, in, p);
}

void matmul_wt_many(const float* x, int T, int in, std::span<const Projection> ps) {
  int64_t weights = 0;
  for (const Projection& p : ps) weights = std::max(weights, int64_t(p.out) * in);
  if (!split_by_rows(T, weights, int64_t(T) * weights)) {
    for (const Projection& p : ps) matmul_wt(x, T, in, p.W, p.out, p.y, p.beta);
    return;
  }
  // One parallel region for all of them: each thread's rows of every projection.
  const int nt = omp_get_max_threads();
  const int rows = (T + nt - 1) / nt;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < nt; ++c) {
    const int t0 = c * rows, n = std::min(rows, T - t0);
    if (n > 0)
      for (const Projection& p : ps) sgemm_rows(x, t0, n, in, p);
  }
}

void rmsnorm(const float* x, const float* w, int T, int n, float eps, float* y, float w_offset) {
  // Work counted x4: a row costs a division and a square root besides the n products.
  parallel_for(T, 4 * int64_t(T) * n, [&](int64_t t) {
    const float* xr = x + size_t(t) * n;
    float* yr = y + size_t(t) * n;
    double ss = 0.0;  // double: the sum of squares of a 4096-wide row loses digits in float
    for (int i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float inv = float(1.0 / std::sqrt(ss / n + double(eps)));
    if (w_offset == 0.0f)
      for (int i = 0; i < n; ++i) yr[i] = xr[i] * inv * w[i];
    else
      for (int i = 0; i < n; ++i) yr[i] = xr[i] * inv * (w_offset + w[i]);
  });
}

void rope_angles(int end, const std::vector<double>& inv_freq, double attn_factor, RopeAngles& a) {
  if (a.inv_freq != inv_freq || a.attn_factor != attn_factor) {
    a.inv_freq = inv_freq;
    a.attn_factor = attn_factor;
    a.half = int(inv_freq.size());
    a.positions = 0;
  }
  if (end <= a.positions) return;
  const int half = a.half;
  a.cos.resize(size_t(end) * half);
  a.sin.resize(size_t(end) * half);
  for (int p = a.positions; p < end; ++p)
    for (int i = 0; i < half; ++i) {
      const double angle = double(p) * inv_freq[size_t(i)];
      a.cos[size_t(p) * half + i] = float(attn_factor * std::cos(angle));
      a.sin[size_t(p) * half + i] = float(attn_factor * std::sin(angle));
    }
  a.positions = end;
}

void apply_rope(float* x, int T, int n_heads, int head_dim, int pos0, const RopeAngles& a,
                RopeLayout layout) {
  const int half = a.half;
  parallel_for(T, int64_t(T) * n_heads * head_dim, [&](int64_t t) {
    const float* c = a.cos.data() + size_t(pos0 + t) * half;
    const float* s = a.sin.data() + size_t(pos0 + t) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (size_t(t) * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        // The pair (a, b) that frequency i rotates.
        float* p0 = layout == RopeLayout::kAdjacentPairs ? v + 2 * i : v + i;
        float* p1 = layout == RopeLayout::kAdjacentPairs ? v + 2 * i + 1 : v + i + half;
        const float x0 = *p0, x1 = *p1;
        *p0 = x0 * c[i] - x1 * s[i];
        *p1 = x0 * s[i] + x1 * c[i];
      }
    }
  });
}

void swiglu(float* gate, const float* up, int64_t n) {
  // Blocks of 4096 elements per task: the kernel is vectorised within a block. Work
  // counted x8 for the exponential (a small model's prefill splits it: +15% tok/s on
  // tinystories656K with 2 threads).
  const int64_t block = 4096;
  parallel_for((n + block - 1) / block, 8 * n, [&](int64_t b) {
    const int64_t i = b * block;
    kernels::silu_mul(gate + i, up + i, std::min(block, n - i));
  });
}

void geglu_tanh(float* gate, const float* up, int64_t n) {
  const float k = float(std::sqrt(2.0 / M_PI));
  parallel_for(n, n, [&](int64_t i) {
    const float g = gate[i];
    gate[i] = 0.5f * g * (1.0f + std::tanh(k * (g + 0.044715f * g * g * g))) * up[i];
  });
}

void softcap(float* x, int64_t n, float cap) {
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] * inv);
}

float alibi_slope(int h, int n_heads) {
  // Slopes 2^(-8(h+1)/n) for the largest power of two n <= n_heads, then the odd
  // entries of the sequence for 2n heads (as in the ALiBi reference implementation).
  int p = 1;
  while (p * 2 <= n_heads) p *= 2;
  if (h < p) return float(std::pow(2.0, -8.0 * (h + 1) / p));
  const int k = 2 * (h - p) + 1;
  return float(std::pow(2.0, -8.0 * (k) / (2.0 * p)));
}

}  // namespace kvscope
