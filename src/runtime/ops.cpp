#include "kvscope/runtime/ops.hpp"

#include <cblas.h>

#include <Eigen/Core>

#include <cmath>
#include <vector>

namespace kvscope {

void matmul_wt(const float* x, int T, int in, const float* W, int out, float* y, float beta) {
  if (T == 1) {  // decoding: a GEMM with one row would pack all of W for nothing
    if (int64_t(out) * in < kBlasGemvMin) {
      // Small W: Eigen's vectorised single-threaded GEMV. OpenBLAS would thread it (past
      // 9216 elements), and threading a GEMV this small costs more than it saves.
      using MatR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      Eigen::Map<const MatR> w(W, out, in);
      Eigen::Map<const Eigen::VectorXf> xv(x, in);
      Eigen::Map<Eigen::VectorXf> yv(y, out);
      if (beta == 0.0f)
        yv.noalias() = w * xv;
      else
        yv.noalias() = beta * yv + w * xv;
      return;
    }
    cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, in, x, 1, beta, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, x, in, W, in, beta, y,
              out);
}

void rmsnorm(const float* x, const float* w, int T, int n, float eps, float* y, float w_offset) {
#pragma omp parallel for schedule(static) if (int64_t(T) * n >= kParallelMin)
  for (int t = 0; t < T; ++t) {
    const float* xr = x + size_t(t) * n;
    float* yr = y + size_t(t) * n;
    double ss = 0.0;  // double: the sum of squares of a 4096-wide row loses digits in float
    for (int i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float inv = float(1.0 / std::sqrt(ss / n + double(eps)));
    if (w_offset == 0.0f)
      for (int i = 0; i < n; ++i) yr[i] = xr[i] * inv * w[i];
    else
      for (int i = 0; i < n; ++i) yr[i] = xr[i] * inv * (w_offset + w[i]);
  }
}

void apply_rope(float* x, int T, int n_heads, int head_dim, int pos0, const double* inv_freq,
                RopeLayout layout, int rot_dim, double attn_factor) {
  const int half = (rot_dim > 0 ? rot_dim : head_dim) / 2;
#pragma omp parallel for schedule(static) if (int64_t(T) * n_heads * head_dim >= kParallelMin)
  for (int t = 0; t < T; ++t) {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
      const double a = double(pos0 + t) * inv_freq[i];
      c[size_t(i)] = float(attn_factor * std::cos(a));
      s[size_t(i)] = float(attn_factor * std::sin(a));
    }
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (size_t(t) * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        // The pair (a, b) that frequency i rotates.
        float* a = layout == RopeLayout::kAdjacentPairs ? v + 2 * i : v + i;
        float* b = layout == RopeLayout::kAdjacentPairs ? v + 2 * i + 1 : v + i + half;
        const float x0 = *a, x1 = *b;
        *a = x0 * c[size_t(i)] - x1 * s[size_t(i)];
        *b = x0 * s[size_t(i)] + x1 * c[size_t(i)];
      }
    }
  }
}

void swiglu(float* gate, const float* up, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void geglu_tanh(float* gate, const float* up, int64_t n) {
  const float k = float(std::sqrt(2.0 / M_PI));
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = 0.5f * g * (1.0f + std::tanh(k * (g + 0.044715f * g * g * g))) * up[i];
  }
}

void softcap(float* x, int64_t n, float cap) {
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] * inv);
}

void softmax_row(float* x, int n) {
  // Eigen's vectorised exp: the attention softmax is most of a decode step's time on
  // small models (scalar expf was 40% of a cache-policy run).
  Eigen::Map<Eigen::ArrayXf> a(x, n);
  a = (a - a.maxCoeff()).exp();
  a *= 1.0f / a.sum();
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
