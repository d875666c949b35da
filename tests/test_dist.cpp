// The pieces of MPI runs that do not need MPI: how items split into rank blocks, and the
// double-double Gram sums that make a spectrum independent of how its sequences were
// split across ranks (tests/mpi/run.sh runs the real thing under mpirun).
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "kvscope/kv/spectrum.hpp"
#include "kvscope/runtime/dist.hpp"

using namespace kvscope;

TEST_CASE("dist: rank blocks tile the items in order, sizes within one", "[dist]") {
  for (int ranks = 1; ranks <= 5; ++ranks)
    for (int64_t n = 0; n <= 23; ++n) {
      int64_t next = 0, lo = n, hi = 0;
      for (int r = 0; r < ranks; ++r) {
        const dist::Block b = dist::block_of(n, r, ranks);
        CHECK(b.first == next);
        next += b.count;
        lo = std::min(lo, b.count);
        hi = std::max(hi, b.count);
      }
      CHECK(next == n);
      CHECK(hi - lo <= 1);
    }
  // Without mpirun this process is the only rank and owns every item.
  CHECK(dist::size() == 1);
  CHECK(dist::mine(7));
}

namespace {

// Nine "sequences" of rows [T, d] with magnitudes spread over six decades, some longer
// than the accumulator's 512-row staging buffer.
std::vector<std::vector<float>> sequences(int d) {
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_real_distribution<float> decade(-3.f, 3.f);
  std::vector<std::vector<float>> out;
  for (int T : {100, 700, 33, 512, 1, 260, 1030, 64, 5}) {
    std::vector<float> x(size_t(T) * d);
    for (float& v : x) v = g(rng) * std::pow(10.f, decade(rng)) + 0.25f;
    out.push_back(std::move(x));
  }
  return out;
}

}  // namespace

TEST_CASE("Gram sums do not depend on how sequences are grouped (as ranks would)", "[dist]") {
  const int d = 12;
  const auto seqs = sequences(d);
  GramAccumulator all(d);
  for (const auto& x : seqs) all.add_rows(x.data(), int64_t(x.size()) / d, d);
  const std::vector<double> want = all.block(0, d, false), want_c = all.block(0, d, true);
  // Groupings as 2 ranks (blocks), 3 ranks (blocks) and 3 ranks (round robin), merged in
  // rank order as dist::sum_double_double does.
  const std::vector<std::vector<std::vector<int>>> splits = {{{0, 1, 2, 3}, {4, 5, 6, 7, 8}},
                                                             {{0, 1, 2}, {3, 4, 5}, {6, 7, 8}},
                                                             {{0, 3, 6}, {1, 4, 7}, {2, 5, 8}},
                                                             {{8, 7, 6, 5}, {4, 3, 2, 1, 0}}};
  for (const auto& ranks : splits) {
    GramAccumulator total(d);
    for (const auto& mine : ranks) {
      GramAccumulator part(d);
      for (int i : mine)
        part.add_rows(seqs[size_t(i)].data(), int64_t(seqs[size_t(i)].size()) / d, d);
      total.merge(part);
    }
    CHECK(total.rows() == all.rows());
    CHECK(total.block(0, d, false) == want);  // bitwise
    CHECK(total.block(0, d, true) == want_c);
  }
  // The same test would catch plain double sums: per-sequence Grams added in double in
  // two of these groupings differ in some entry.
  auto gram = [&](const std::vector<float>& x) {
    std::vector<double> g(size_t(d) * d, 0.0);
    for (size_t r = 0; r < x.size() / d; ++r)
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j) g[size_t(i) * d + j] += double(x[r * d + i]) * x[r * d + j];
    return g;
  };
  std::vector<double> seq_sum(size_t(d) * d, 0.0), a(size_t(d) * d, 0.0), b(size_t(d) * d, 0.0);
  for (int i = 0; i < 9; ++i) {
    const auto g = gram(seqs[size_t(i)]);
    for (size_t k = 0; k < g.size(); ++k) (i < 4 ? a : b)[k] += g[k], seq_sum[k] += g[k];
  }
  int differ = 0;
  for (size_t k = 0; k < a.size(); ++k) differ += (a[k] + b[k]) != seq_sum[k];
  CHECK(differ > 0);
  // And the double-double result is the accurate one: within 1e-13 of the plain sum
  // relative to the entry's own scale (diagonal), whatever the grouping.
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      const double scale = std::sqrt(seq_sum[size_t(i) * d + i] * seq_sum[size_t(j) * d + j]);
      CHECK(std::abs(want[size_t(i) * d + j] - seq_sum[size_t(i) * d + j]) <= 1e-13 * scale);
    }
}
