#include "kvscope/train_ops.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "kvscope/ops.hpp"

namespace kvscope::train {

namespace {
template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Map = Eigen::Map<Mat<T>>;
template <class T>
using CMap = Eigen::Map<const Mat<T>>;
}  // namespace

template <class T>
void matmul_fw(const T* x, int rows, int in, const T* W, int out, T* y) {
  Map<T>(y, rows, out).noalias() = CMap<T>(x, rows, in) * CMap<T>(W, out, in).transpose();
}

template <class T>
void matmul_bw(const T* dy, const T* x, int rows, int in, const T* W, int out, T* dx, T* dW) {
  if (dx) Map<T>(dx, rows, in).noalias() += CMap<T>(dy, rows, out) * CMap<T>(W, out, in);
  if (dW)
    Map<T>(dW, out, in).noalias() += CMap<T>(dy, rows, out).transpose() * CMap<T>(x, rows, in);
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
void rope(T* x, int rows, int heads, int hd, double theta, RopeLayout layout, bool inverse) {
  const int half = hd / 2;
  for (int t = 0; t < rows; ++t)
    for (int i = 0; i < half; ++i) {
      // Same angles as ops.cpp apply_rope, computed in double.
      const double a = double(t) * std::pow(theta, -2.0 * i / hd);
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

// One head's [T, hd] slice of a [T, width] row-major buffer.
template <class T>
using HeadMap = Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using CHeadMap = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>;

template <class T>
void attention_fw(const T* q, const T* k, const T* v, int rows, int H, int G, int hd, bool alibi,
                  T* probs, T* out) {
  const int group = H / G, Q = H * hd, KV = G * hd;
  const T scale = T(1.0 / std::sqrt(double(hd)));
  for (int h = 0; h < H; ++h) {
    const int g = h / group;
    const CHeadMap<T> qh(q + h * hd, rows, hd, Eigen::OuterStride<>(Q));
    const CHeadMap<T> kh(k + g * hd, rows, hd, Eigen::OuterStride<>(KV));
    const CHeadMap<T> vh(v + g * hd, rows, hd, Eigen::OuterStride<>(KV));
    Map<T> P(probs + size_t(h) * rows * rows, rows, rows);  // [T, T]
    P.noalias() = (qh * kh.transpose()) * scale;
    const T slope = alibi ? T(alibi_slope(h, H)) : T(0);
    for (int i = 0; i < rows; ++i) {
      T* p = P.data() + size_t(i) * rows;
      if (alibi)
        for (int j = 0; j <= i; ++j) p[j] -= slope * T(i - j);
      // Eigen's vectorised exp: the softmax is most of the attention's time otherwise.
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> a(p, i + 1);
      a = (a - a.maxCoeff()).exp();
      a *= T(1) / a.sum();
      std::fill(p + i + 1, p + rows, T(0));  // causal mask
    }
    HeadMap<T>(out + h * hd, rows, hd, Eigen::OuterStride<>(Q)).noalias() = P * vh;
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
    const CHeadMap<T> qh(q + h * hd, rows, hd, Eigen::OuterStride<>(Q));
    const CHeadMap<T> kh(k + g * hd, rows, hd, Eigen::OuterStride<>(KV));
    const CHeadMap<T> vh(v + g * hd, rows, hd, Eigen::OuterStride<>(KV));
    const CHeadMap<T> doh(dout + h * hd, rows, hd, Eigen::OuterStride<>(Q));
    const CMap<T> P(probs + size_t(h) * rows * rows, rows, rows);
    // dP = dO V^T; dS = P o (dP - rowsum(dP o P)) (softmax backward; masked entries have P = 0)
    dS.noalias() = doh * vh.transpose();
    for (int i = 0; i < rows; ++i) {
      T dot = 0;
      for (int j = 0; j <= i; ++j) dot += dS(i, j) * P(i, j);
      for (int j = 0; j < rows; ++j) dS(i, j) = P(i, j) * (dS(i, j) - dot) * scale;
    }
    HeadMap<T>(dq + h * hd, rows, hd, Eigen::OuterStride<>(Q)).noalias() += dS * kh;
    HeadMap<T>(dk + g * hd, rows, hd, Eigen::OuterStride<>(KV)).noalias() += dS.transpose() * qh;
    HeadMap<T>(dv + g * hd, rows, hd, Eigen::OuterStride<>(KV)).noalias() += P.transpose() * doh;
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
  template void rmsnorm_fw<T>(const T*, const T*, int, int, double, T*, T*);                     \
  template void rmsnorm_bw<T>(const T*, const T*, const T*, const T*, int, int, T*, T*);         \
  template void rope<T>(T*, int, int, int, double, RopeLayout, bool);                            \
  template void attention_fw<T>(const T*, const T*, const T*, int, int, int, int, bool, T*, T*); \
  template void attention_bw<T>(const T*, const T*, const T*, const T*, const T*, int, int, int, \
                                int, T*, T*, T*);                                                \
  template void swiglu_fw<T>(const T*, const T*, int64_t, T*);                                   \
  template void swiglu_bw<T>(const T*, const T*, const T*, int64_t, T*, T*);                     \
  template double cross_entropy<T>(const T*, const int32_t*, int, int, double, T*);

KVSCOPE_TRAIN_OPS(float)
KVSCOPE_TRAIN_OPS(double)

}  // namespace kvscope::train
