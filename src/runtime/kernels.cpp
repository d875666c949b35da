// Dispatch of the decoding kernels, and their portable (Eigen) versions.
#include "kvscope/runtime/kernels.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels_avx2.hpp"

namespace kvscope::kernels {

namespace {

using MatR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

bool detect() {
  const char* env = std::getenv("KVSCOPE_SIMD");
  if (env && std::strcmp(env, "0") == 0) return false;
  return avx2::supported();
}

bool& active() {
  static bool on = detect();
  return on;
}

}  // namespace

bool simd_active() {
  return active();
}

void use_simd(bool on) {
  active() = on && avx2::supported();
}

void gemv(const float* W, int out, int in, const float* x, float* y, float alpha, float beta) {
  if (active()) return avx2::gemv(W, out, in, x, y, alpha, beta);
  Eigen::Map<const MatR> w(W, out, in);
  Eigen::Map<const Eigen::VectorXf> xv(x, in);
  Eigen::Map<Eigen::VectorXf> yv(y, out);
  if (beta == 0.0f)
    yv.noalias() = alpha * (w * xv);
  else
    yv = beta * yv + alpha * (w * xv);
}

void gemv_t(const float* V, int m, int n, const float* p, float* y) {
  if (active() && avx2::gemv_t(V, m, n, p, y)) return;
  Eigen::Map<Eigen::VectorXf>(y, n).noalias() =
      Eigen::Map<const MatR>(V, m, n).transpose() * Eigen::Map<const Eigen::VectorXf>(p, m);
}

float softmax(float* x, int n, bool normalize) {
  if (active()) return avx2::softmax(x, n, normalize);
  Eigen::Map<Eigen::ArrayXf> a(x, n);
  a = (a - a.maxCoeff()).exp();
  const float inv = 1.0f / a.sum();
  if (normalize) a *= inv;
  return inv;
}

void silu_mul(float* gate, const float* up, int64_t n) {
  if (active()) return avx2::silu_mul(gate, up, long(n));
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace kvscope::kernels
