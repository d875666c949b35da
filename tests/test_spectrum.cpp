// Spectra: the streaming Gram + symmetric eigensolver path against a direct SVD
// (LAPACKE_dgesdd) of the same matrix, exact low-rank and orthogonal constructions whose
// spectra are known by hand, and centring against an explicitly centred matrix.
#include <lapacke.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "kvscope/kv/spectrum.hpp"
#include "kvscope/runtime/forward.hpp"
#include "test_util.hpp"

using namespace kvscope;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

// Singular values of x [n, d] (float data, widened) by LAPACK's divide-and-conquer SVD.
std::vector<double> direct_svd(const std::vector<float>& x, int n, int d) {
  std::vector<double> a(x.begin(), x.end()), s(static_cast<size_t>(std::min(n, d)));
  // No vectors are computed, but row-major LAPACKE still checks ldvt >= d.
  std::vector<double> u(1), vt(static_cast<size_t>(d) * d);
  REQUIRE(LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'N', n, d, a.data(), d, s.data(), u.data(), 1, vt.data(),
                         d) == 0);
  return s;
}

std::vector<double> gram_svd(const std::vector<float>& x, int n, int d, bool centred = false) {
  GramAccumulator g(d);
  // Uneven pieces, to cross the accumulator's internal staging boundaries.
  int64_t r = 0;
  for (int piece : {1, 700, 3, 511, 1000000}) {
    const int64_t m = std::min<int64_t>(piece, n - r);
    g.add_rows(x.data() + r * d, m, d);
    r += m;
  }
  return singular_values_from_gram(g.block(0, d, centred), d);
}

// max_i |a_i - b_i| / b_0 over the leading min(len) values.
double max_rel_to_top(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m / b[0];
}

}  // namespace

TEST_CASE("Gram + dsyevd singular values equal a direct SVD to 1e-8 (random)", "[spectrum]") {
  // Columns scaled over five decades, so the spectrum spans 1 .. 1e-5.
  const int n = 3000, d = 48;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(n) * d);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) x[size_t(i) * d + j] = nd(rng) * std::pow(10.f, -5.f * j / (d - 1));
  const auto ref = direct_svd(x, n, d), got = gram_svd(x, n, d);
  CHECK(max_rel_to_top(got, ref) < 1e-8);
  // Each value on its own: relative error below 1e-8 down to 1e-3 of the largest (the
  // Gram squares the condition number, so the error grows as (s_max / s_i)^2 * eps).
  for (int i = 0; i < d; ++i)
    if (ref[size_t(i)] > 1e-3 * ref[0])
      CHECK(std::abs(got[size_t(i)] - ref[size_t(i)]) / ref[size_t(i)] < 1e-8);
  // All 48 values are far above the floor and reported (none zeroed).
  CHECK(got[size_t(d - 1)] > 0.0);
  CHECK(std::abs(got[size_t(d - 1)] - ref[size_t(d - 1)]) / ref[size_t(d - 1)] < 1e-3);
}

TEST_CASE("Gram + dsyevd equals a direct SVD on real captured keys", "[spectrum][model]") {
  const Model m = load_model(test::stories260k());
  struct Keep : ForwardObserver {
    std::vector<float> k;  // layer 2 keys after RoPE, [4 heads, T, 8]
    void on_layer(const LayerCapture& c) override {
      if (c.layer == 2) k.assign(c.k, c.k + size_t(c.n_kv_heads) * c.n_tokens * c.head_dim);
    }
  } keep;
  std::vector<int32_t> toks{1};
  for (int i = 1; i < 400; ++i) toks.push_back(int32_t(3 + (i * 37) % 500));
  RunState st(m.config, 400);
  ForwardOptions fo;
  fo.observer = &keep;
  forward(m, st, toks, fo);
  // The layer matrix [T, heads * hd] with heads side by side.
  const int T = 400, H = 4, hd = 8, d = H * hd;
  std::vector<float> x(size_t(T) * d);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < hd; ++i)
        x[size_t(t) * d + h * hd + i] = keep.k[(size_t(h) * T + t) * hd + i];
  const auto ref = direct_svd(x, T, d), got = gram_svd(x, T, d);
  CHECK(max_rel_to_top(got, ref) < 1e-8);
  // add_heads on the head-major capture builds the same Gram as add_rows on the layout.
  GramAccumulator a(d), b(d);
  a.add_heads(keep.k.data(), H, T, hd);
  b.add_rows(x.data(), T, d);
  CHECK(a.block(0, d, false) == b.block(0, d, false));
  CHECK(a.rows() == T);
  // skip drops the first tokens of each sequence.
  GramAccumulator c(d), e(d);
  c.add_heads(keep.k.data(), H, T, hd, /*skip=*/1);
  e.add_rows(x.data() + d, T - 1, d);
  CHECK(c.block(0, d, false) == e.block(0, d, false));
}

TEST_CASE("a matrix of known rank r has exactly r singular values above 1e-10", "[spectrum]") {
  // X = A B with small integers: every product and sum is exact in float and double, so
  // X has rank exactly r (A [n, r], B [r, d] random in -3..3).
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> u(-3, 3);
  for (int r : {1, 3, 7}) {
    const int n = 500, d = 24;
    std::vector<int> A(size_t(n) * r), B(size_t(r) * d);
    for (int& v : A) v = u(rng);
    for (int& v : B) v = u(rng);
    std::vector<float> x(size_t(n) * d, 0.f);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < d; ++j)
        for (int k = 0; k < r; ++k)
          x[size_t(i) * d + j] += float(A[size_t(i) * r + k] * B[size_t(k) * d + j]);
    const auto sv = gram_svd(x, n, d);
    int above = 0;
    for (double s : sv) above += s > 1e-10 * sv[0];
    CHECK(above == r);
  }
}

TEST_CASE("per-head and layer energies of an orthogonal construction (hand-computed)",
          "[spectrum]") {
  // Two heads of 4 dims; rows are unit vectors, so the Gram is diag(s^2):
  // head 0 has singular values {4, 2, 1, 1}, head 1 {3, 3, 0, 0}.
  const float s[8] = {4, 2, 1, 1, 3, 3, 0, 0};
  std::vector<float> x(64, 0.f);
  for (int i = 0; i < 8; ++i) x[size_t(i) * 8 + i] = s[i];
  GramAccumulator g(8);
  g.add_rows(x.data(), 8, 8);

  // Head 0: energies 16, 4, 1, 1 of 22.
  const auto h0 = singular_values_from_gram(g.block(0, 4, false), 4);
  CHECK(h0 == std::vector<double>{4, 2, 1, 1});
  const EnergySummary e0 = summarize_energy(h0);
  CHECK(e0.top25 == Approx(16.0 / 22).epsilon(1e-12));  // top 1 of 4
  CHECK(e0.top50 == Approx(20.0 / 22).epsilon(1e-12));  // top 2 of 4
  CHECK(e0.rank50 == 1);                                // 16/22 = 0.727
  CHECK(e0.rank75 == 2);                                // 20/22 = 0.909
  CHECK(e0.rank90 == 2);
  CHECK(e0.rank95 == 3);  // 21/22 = 0.955
  CHECK(e0.rank99 == 4);
  CHECK(e0.stable_rank == Approx(22.0 / 16).epsilon(1e-12));

  // Head 1: energies 9, 9, 0, 0 of 18; rank 2.
  const EnergySummary e1 = summarize_energy(singular_values_from_gram(g.block(4, 4, false), 4));
  CHECK(e1.top25 == Approx(0.5).epsilon(1e-12));
  CHECK(e1.top50 == Approx(1.0).epsilon(1e-12));
  CHECK(e1.rank50 == 1);
  CHECK(e1.rank75 == 2);
  CHECK(e1.rank99 == 2);
  CHECK(e1.stable_rank == Approx(2.0).epsilon(1e-12));

  // The layer: {4, 3, 3, 2, 1, 1, 0, 0}, energies 16, 9, 9, 4, 1, 1 of 40.
  const auto layer = singular_values_from_gram(g.block(0, 8, false), 8);
  CHECK(layer == std::vector<double>{4, 3, 3, 2, 1, 1, 0, 0});
  const EnergySummary el = summarize_energy(layer);
  CHECK(el.top25 == Approx(25.0 / 40).epsilon(1e-12));  // top 2 of 8
  CHECK(el.top50 == Approx(38.0 / 40).epsilon(1e-12));  // top 4 of 8
  CHECK(el.rank90 == 4);                                // 34/40 = 0.85, 38/40 = 0.95
  CHECK(el.rank99 == 6);
  CHECK(el.stable_rank == Approx(2.5).epsilon(1e-12));
  const auto shares = energy_shares(layer);
  CHECK(shares[0] == Approx(0.4).epsilon(1e-12));
  CHECK(shares[7] == 0.0);
}

TEST_CASE("centred Gram equals the Gram of the explicitly centred matrix", "[spectrum]") {
  const int n = 1000, d = 6;
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(n) * d);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) x[size_t(i) * d + j] = nd(rng) + 5.f * float(j);  // big means
  GramAccumulator g(d);
  g.add_rows(x.data(), n, d);
  const auto centred = g.block(0, d, true);
  std::vector<double> mean(d, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) mean[size_t(j)] += x[size_t(i) * d + j] / double(n);
  for (int a = 0; a < d; ++a)
    for (int b = 0; b < d; ++b) {
      double want = 0.0;
      for (int i = 0; i < n; ++i)
        want += (x[size_t(i) * d + a] - mean[size_t(a)]) * (x[size_t(i) * d + b] - mean[size_t(b)]);
      CHECK(centred[size_t(a) * d + b] == Approx(want).epsilon(1e-9));
    }
}
