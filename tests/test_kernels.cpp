// The decoding kernels (AVX2 and portable) against double-precision loops written here,
// on every shape class the AVX2 code treats separately: row counts below, at and past a
// multiple of 8, row lengths with and without a tail, 1 to 9 column groups of 8.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kvscope/runtime/kernels.hpp"

using namespace kvscope;

namespace {

std::vector<float> uniform(size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Runs f once with the AVX2 kernels (when this CPU has them) and once with the portable
// ones, restoring the dispatch afterwards.
template <class F>
void both_paths(F f) {
  const bool was = kernels::simd_active();
  for (bool simd : {true, false}) {
    kernels::use_simd(simd);
    if (simd && !kernels::simd_active()) continue;  // no AVX2 here: portable only
    INFO("simd " << simd);
    f();
  }
  kernels::use_simd(was);
}

}  // namespace

TEST_CASE("kernels::gemv matches a double-precision product, with alpha and beta") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  both_paths([&] {
    for (int out : {1, 7, 8, 9, 16, 21})
      for (int in : {1, 3, 8, 13, 64, 70, 172}) {
        const auto W = uniform(size_t(out) * in, -1, 1, uint32_t(out * 1000 + in));
        const auto x = uniform(size_t(in), -2, 2, uint32_t(in));
        const auto y0 = uniform(size_t(out), -3, 3, 7);
        for (auto [alpha, beta] :
             {std::pair{1.0f, 0.0f}, {0.25f, 0.0f}, {1.0f, 1.0f}, {-0.5f, 2.0f}}) {
          // beta 0 must not read y: NaN there would poison the result.
          std::vector<float> y = beta == 0.0f ? std::vector<float>(size_t(out), nan) : y0;
          kernels::gemv(W.data(), out, in, x.data(), y.data(), alpha, beta);
          for (int r = 0; r < out; ++r) {
            double ref = 0.0, mag = 0.0;
            for (int k = 0; k < in; ++k) {
              ref += double(W[size_t(r) * in + k]) * x[size_t(k)];
              mag += std::abs(double(W[size_t(r) * in + k]) * x[size_t(k)]);
            }
            ref = alpha * ref + (beta != 0.0f ? beta * double(y0[size_t(r)]) : 0.0);
            mag = std::abs(alpha) * mag + std::abs(beta * double(y0[size_t(r)]));
            INFO("out " << out << " in " << in << " row " << r << " alpha " << alpha << " beta "
                        << beta);
            // Float accumulation: at most ~in roundings of terms bounded by mag.
            REQUIRE(std::abs(y[size_t(r)] - ref) <= 2e-7 * (in + 2) * mag + 1e-30);
          }
        }
      }
  });
}

TEST_CASE("kernels::gemv_t (V^T p) matches a double-precision sum") {
  both_paths([&] {
    for (int n : {4, 8, 16, 24, 32, 40, 48, 56, 64, 72, 96, 128, 136})
      for (int m : {1, 2, 3, 5, 8, 9, 33, 300}) {
        const auto V = uniform(size_t(m) * n, -1, 1, uint32_t(m * 7 + n));
        const auto p = uniform(size_t(m), 0, 1, uint32_t(m));
        std::vector<float> y(size_t(n), std::numeric_limits<float>::quiet_NaN());
        kernels::gemv_t(V.data(), m, n, p.data(), y.data());
        for (int d = 0; d < n; ++d) {
          double ref = 0.0, mag = 0.0;
          for (int j = 0; j < m; ++j) {
            ref += double(p[size_t(j)]) * V[size_t(j) * n + d];
            mag += std::abs(double(p[size_t(j)]) * V[size_t(j) * n + d]);
          }
          INFO("m " << m << " n " << n << " column " << d);
          REQUIRE(std::abs(y[size_t(d)] - ref) <= 2e-7 * (m + 2) * mag + 1e-30);
        }
      }
  });
}

TEST_CASE("kernels::softmax matches a double-precision softmax to a few ulp") {
  both_paths([&] {
    for (int n : {1, 2, 7, 8, 9, 31, 64, 100, 4099})
      for (float spread : {1.0f, 30.0f, 200.0f}) {
        auto x = uniform(size_t(n), -spread, spread, uint32_t(n + int(spread)));
        const std::vector<float> in = x;
        kernels::softmax(x.data(), n);
        double mx = in[0];
        for (float v : in) mx = std::max(mx, double(v));
        double z = 0.0;
        for (float v : in) z += std::exp(double(v) - mx);
        double total = 0.0;
        for (int i = 0; i < n; ++i) {
          const double ref = std::exp(double(in[size_t(i)]) - mx) / z;
          INFO("n " << n << " spread " << spread << " entry " << i << " logit " << in[size_t(i)]);
          // exp and the scaling to a few ulp, the float sum's rounding (at most one per
          // term of a lane, with at least 4 lanes), and the float subtraction x - max
          // (half an ulp of the difference, which exp turns into a relative error);
          // entries whose exp underflows float (below e^-87) may come out 0.
          const double d = mx - in[size_t(i)];
          const double rel = 4e-7 + 1.2e-7 * n / 4 + 6e-8 * d;
          REQUIRE(std::abs(x[size_t(i)] - ref) <= rel * ref + 1e-37);
          total += x[size_t(i)];
        }
        REQUIRE(std::abs(total - 1.0) <= 1e-5);
        // Unnormalised: exp(x - max) and the returned 1 / sum give the same weights.
        std::vector<float> y = in;
        const float inv = kernels::softmax(y.data(), n, false);
        for (int i = 0; i < n; ++i)
          REQUIRE(std::abs(double(y[size_t(i)]) * inv - x[size_t(i)]) <=
                  1e-6 * x[size_t(i)] + 1e-37);
      }
  });
}

TEST_CASE("kernels::silu_mul matches g / (1 + e^-g) * u in double") {
  both_paths([&] {
    for (int n : {1, 5, 8, 13, 100}) {
      auto g = uniform(size_t(n), -20, 20, uint32_t(n));
      const auto u = uniform(size_t(n), -2, 2, uint32_t(n + 1));
      g[0] = n > 1 ? -120.0f : 95.0f;  // past exp's clamps
      const std::vector<float> g0 = g;
      kernels::silu_mul(g.data(), u.data(), n);
      for (int i = 0; i < n; ++i) {
        const double x = g0[size_t(i)];
        const double ref = x / (1.0 + std::exp(-x)) * u[size_t(i)];
        INFO("n " << n << " entry " << i << " gate " << x);
        // exp to ~2 ulp, then a division and a product: a few ulp of the result.
        REQUIRE(std::abs(g[size_t(i)] - ref) <= 6e-7 * std::abs(ref) + 1e-30);
      }
    }
  });
}

TEST_CASE("kernels: the dispatch can be switched to the portable kernels and back") {
  const bool was = kernels::simd_active();
  kernels::use_simd(false);
  REQUIRE_FALSE(kernels::simd_active());
  kernels::use_simd(true);
#if defined(__x86_64__)
  // On when and only when the CPU has both: a false on such a CPU means the fast path
  // silently went missing.
  REQUIRE(kernels::simd_active() ==
          (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")));
#endif
  kernels::use_simd(was);
}
