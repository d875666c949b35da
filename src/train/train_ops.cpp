#include "kvscope/train/train_ops.hpp"

#include <cblas.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "kvscope/runtime/ops.hpp"

namespace kvscope::train {

namespace {
template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Map = Eigen::Map<Mat<T>>;
template <class T>
using CMap = Eigen::Map<const Mat<T>>;
}  // namespace

// C[m, n] (+)= op(A) op(B), row-major: OpenBLAS for float (it picks the machine's widest
// SIMD at run time; Eigen is compiled for the baseline ISA), Eigen for double.
template <class T>
void gemm(bool ta, bool tb, int m, int n, int k, const T* A, int lda, const T* B, int ldb, T beta,
          T* C, int ldc) {
  using Stride = Eigen::OuterStride<>;
  using CM = Eigen::Map<const Mat<T>, 0, Stride>;
  Eigen::Map<Mat<T>, 0, Stride> c(C, m, n, Stride(ldc));
  const CM a(A, ta ? k : m, ta ? m : k, Stride(lda));
  const CM b(B, tb ? n : k, tb ? k : n, Stride(ldb));
  if (beta == T(0)) c.setZero();
  if (ta && tb) c.noalias() += a.transpose() * b.transpose();
  if (ta && !tb) c.noalias() += a.transpose() * b;
  if (!ta && tb) c.noalias() += a * b.transpose();
  if (!ta && !tb) c.noalias() += a * b;
}

template <>
void gemm<float>(bool ta, bool tb, int m, int n, int k, const float* A, int lda, const float* B,
                 int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

template <class T>
void matmul_fw(const T* x, int rows, int in, const T* W, int out, T* y) {
  gemm<T>(false, true, rows, out, in, x, in, W, in, T(0), y, out);
}

template <class T>
void matmul_bw(const T* dy, const T* x, int rows, int in, const T* W, int out, T* dx, T* dW) {
  if (dx) gemm<T>(false, false, rows, in, out, dy, out, W, in, T(1), dx, in);
  if (dW) gemm<T>(true, false, out, in, rows, dy, out, x, in, T(1), dW, in);
}

template <class T>
void group_matmul_fw(const T* x, int rows, int groups, int in, const T* W, int out, T* y) {
  for (int j = 0; j < groups; ++j)
    gemm<T>(false, true, rows, out, in, x + size_t(j) * in, groups * in, W + size_t(j) * out * in,
            in, T(0), y + size_t(j) * out, groups * out);
}

template <class T>
void group_matmul_bw(const T* dy, const T* x, int rows, int groups, int in, const T* W, int out,
                     T* dx, T* dW) {
  for (int j = 0; j < groups; ++j) {
    const T* dyj = dy + size_t(j) * out;
    if (dx)
      gemm<T>(false, false, rows, in, out, dyj, groups * out, W + size_t(j) * out * in, in, T(1),
              dx + size_t(j) * in, groups * in);
    if (dW)
      gemm<T>(true, false, out, in, rows, dyj, groups * out, x + size_t(j) * in, groups * in, T(1),
              dW + size_t(j) * out * in, in);
  }
}

template <class T>
void rmsnorm_fw(const T* x, const T* g, int rows, int n, double eps, T* y, T* r) {
  for (int t = 0; t < rows; ++t) {
    const T* xr = x + size_t(t) * n;
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += double(xr[i]) * double(xr[i]);
    r[t] = T(1.0 / std::sqrt(ss / n + eps));
    for (int i = 0; i < n; ++i) y[size_t(t) * n + i] = xr[i] * r[t] * g[i];
  }
}

template <class T>
void rmsnorm_bw(const T* dy, const T* x, const T* g, const T* r, int rows, int n, T* dx, T* dg) {
  for (int t = 0; t < rows; ++t) {
    const T* xr = x + size_t(t) * n;
    const T* dyr = dy + size_t(t) * n;
    // y_i = x_i r g_i, r = (mean x^2 + eps)^(-1/2), dr/dx_i = -r^3 x_i / n
    T dot = 0;
    for (int i = 0; i < n; ++i) dot += dyr[i] * g[i] * xr[i];
    const T r3n = r[t] * r[t] * r[t] / T(n);
    for (int i = 0; i < n; ++i) {
      if (dx) dx[size_t(t) * n + i] += dyr[i] * g[i] * r[t] - r3n * xr[i] * dot;
      if (dg) dg[i] += dyr[i] * xr[i] * r[t];
    }
  }
}

template <class T>
void rope(T* x, int rows, int heads, int hd, const std::vector<double>& inv_freq, RopeLayout layout,
          bool inverse) {
  const int half = hd / 2;
  for (int t = 0; t < rows; ++t)
    for (int i = 0; i < half; ++i) {
      // Same angles as ops.cpp apply_rope, computed in double (rope_inv_freq: theta and a
      // static rope_scaling applied).
      const double a = double(t) * inv_freq[size_t(i)];
      const T c = T(std::cos(a)), s = T(inverse ? -std::sin(a) : std::sin(a));
      for (int h = 0; h < heads; ++h) {
        T* v = x + (size_t(t) * heads + h) * hd;
        T* p = layout == RopeLayout::kAdjacentPairs ? v + 2 * i : v + i;
        T* q = layout == RopeLayout::kAdjacentPairs ? v + 2 * i + 1 : v + i + half;
        const T x0 = *p, x1 = *q;
        *p = x0 * c - x1 * s;
        *q = x0 * s + x1 * c;
      }
    }
}

template <class T>
void attention_fw(const T* q, const T* k, const T* v, int rows, int H, int G, int hd, bool alibi,
                  T* probs, T* out) {
  const int group = H / G, Q = H * hd, KV = G * hd;
  const T scale = T(1.0 / std::sqrt(double(hd)));
  for (int h = 0; h < H; ++h) {
    const int g = h / group;
    Map<T> P(probs + size_t(h) * rows * rows, rows, rows);  // [T, T]
    gemm<T>(false, true, rows, rows, hd, q + h * hd, Q, k + g * hd, KV, T(0), P.data(), rows);
    P *= scale;
    const T slope = alibi ? T(alibi_slope(h, H)) : T(0);
    for (int i = 0; i < rows; ++i) {
      T* p = P.data() + size_t(i) * rows;
      if (alibi)
        for (int j = 0; j <= i; ++j) p[j] -= slope * T(i - j);
      // Eigen's vectorised exp (the scalar loop cost a quarter of a training step).
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> a(p, i + 1);
      a = (a - a.maxCoeff()).exp();
      a *= T(1) / a.sum();
      std::fill(p + i + 1, p + rows, T(0));  // causal mask
    }
    gemm<T>(false, false, rows, hd, rows, P.data(), rows, v + g * hd, KV, T(0), out + h * hd, Q);
  }
}

template <class T>
void attention_bw(const T* dout, const T* q, const T* k, const T* v, const T* probs, int rows,
                  int H, int G, int hd, T* dq, T* dk, T* dv) {
  const int group = H / G, Q = H * hd, KV = G * hd;
  const T scale = T(1.0 / std::sqrt(double(hd)));
  Mat<T> dS(rows, rows);  // [T, T]
  for (int h = 0; h < H; ++h) {
    const int g = h / group;
    const CMap<T> P(probs + size_t(h) * rows * rows, rows, rows);
    // dP = dO V^T; dS = P o (dP - rowsum(dP o P)) (softmax backward; masked entries have P = 0)
    gemm<T>(false, true, rows, rows, hd, dout + h * hd, Q, v + g * hd, KV, T(0), dS.data(), rows);
    for (int i = 0; i < rows; ++i) {
      T dot = 0;
      for (int j = 0; j <= i; ++j) dot += dS(i, j) * P(i, j);
      for (int j = 0; j < rows; ++j) dS(i, j) = P(i, j) * (dS(i, j) - dot) * scale;
    }
    gemm<T>(false, false, rows, hd, rows, dS.data(), rows, k + g * hd, KV, T(1), dq + h * hd, Q);
    gemm<T>(true, false, rows, hd, rows, dS.data(), rows, q + h * hd, Q, T(1), dk + g * hd, KV);
    gemm<T>(true, false, rows, hd, rows, P.data(), rows, dout + h * hd, Q, T(1), dv + g * hd, KV);
  }
}

template <class T>
void swiglu_fw(const T* a, const T* b, int64_t n, T* g) {
  for (int64_t i = 0; i < n; ++i) g[i] = a[i] / (T(1) + std::exp(-a[i])) * b[i];
}

template <class T>
void swiglu_bw(const T* dg, const T* a, const T* b, int64_t n, T* da, T* db) {
  for (int64_t i = 0; i < n; ++i) {
    const T sig = T(1) / (T(1) + std::exp(-a[i]));
    da[i] += dg[i] * b[i] * sig * (T(1) + a[i] * (T(1) - sig));
    db[i] += dg[i] * a[i] * sig;
  }
}

template <class T>
double cross_entropy(const T* logits, const int32_t* targets, int rows, int vocab, double scale,
                     T* dlogits) {
  double loss = 0;
  for (int t = 0; t < rows; ++t) {
    const T* l = logits + size_t(t) * vocab;
    T* dl = dlogits ? dlogits + size_t(t) * vocab : nullptr;
    if (targets[t] < 0) {
      if (dl) std::fill(dl, dl + vocab, T(0));
      continue;
    }
    const T m = *std::max_element(l, l + vocab);
    double sum = 0;
    for (int i = 0; i < vocab; ++i) sum += std::exp(double(l[i] - m));
    loss += std::log(sum) + double(m) - double(l[targets[t]]);
    if (dl) {
      for (int i = 0; i < vocab; ++i) dl[i] = T(std::exp(double(l[i] - m)) / sum * scale);
      dl[targets[t]] -= T(scale);
    }
  }
  return loss;
}

#define KVSCOPE_TRAIN_OPS(T)                                                                     \
  template void matmul_fw<T>(const T*, int, int, const T*, int, T*);                             \
  template void matmul_bw<T>(const T*, const T*, int, int, const T*, int, T*, T*);               \
  template void group_matmul_fw<T>(const T*, int, int, int, const T*, int, T*);                  \
  template void group_matmul_bw<T>(const T*, const T*, int, int, int, const T*, int, T*, T*);    \
  template void rmsnorm_fw<T>(const T*, const T*, int, int, double, T*, T*);                     \
  template void rmsnorm_bw<T>(const T*, const T*, const T*, const T*, int, int, T*, T*);         \
  template void rope<T>(T*, int, int, int, const std::vector<double>&, RopeLayout, bool);        \
  template void attention_fw<T>(const T*, const T*, const T*, int, int, int, int, bool, T*, T*); \
  template void attention_bw<T>(const T*, const T*, const T*, const T*, const T*, int, int, int, \
                                int, T*, T*, T*);                                                \
  template void swiglu_fw<T>(const T*, const T*, int64_t, T*);                                   \
  template void swiglu_bw<T>(const T*, const T*, const T*, int64_t, T*, T*);                     \
  template double cross_entropy<T>(const T*, const int32_t*, int, int, double, T*);

KVSCOPE_TRAIN_OPS(float)
KVSCOPE_TRAIN_OPS(double)

}  // namespace kvscope::train
