// Spectrum cost: Gram accumulation (float rows -> double, dsyrk) in GFLOP/s next to the
// machine's dgemm rate measured in the same run, and the time to analyse one
// LLaMA-2-7B-shaped layer (32 KV heads x 128 dims = 4096 columns) over 16k tokens of
// synthetic data: accumulation, then the eigendecompositions of the layer, of each head
// and of 16 groups of 2 heads.
//
//   build/bench/bench_spectrum [threads]
#include <cblas.h>

#include <cstdio>
#include <random>
#include <vector>

#include "bench_util.hpp"
#include "kvscope/kv/spectrum.hpp"
#include "kvscope/runtime/threads.hpp"

using namespace kvscope;
using namespace kvscope::bench;

namespace {

double dgemm_gflops(int n, int reps = 5) {
  std::vector<double> a(size_t(n) * n, 0.5), b(size_t(n) * n, 0.25), c(size_t(n) * n);
  double best = 1e30;
  for (int r = 0; r <= reps; ++r) {
    const double t0 = now_seconds();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0, a.data(), n, b.data(), n,
                0.0, c.data(), n);
    if (r > 0) best = std::min(best, now_seconds() - t0);
  }
  return 2.0 * n * n * double(n) / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = set_threads(argc > 1 ? std::atoi(argv[1]) : 0);
  std::printf("threads: %d\nBLAS: %s\n", threads, blas_info().c_str());
  const double ceiling = dgemm_gflops(2048);
  std::printf("dgemm ceiling (2048^3, A*B^T): %.1f GFLOP/s\n\n", ceiling);

  const int heads = 32, hd = 128, d = heads * hd, tokens = 16384;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  // One 512-token sequence of synthetic head-major data, fed 32 times (16k tokens).
  const int T = 512;
  std::vector<float> x(size_t(heads) * T * hd);
  for (float& v : x) v = nd(rng);
  GramAccumulator g(d);
  const double t0 = now_seconds();
  for (int s = 0; s < tokens / T; ++s) g.add_heads(x.data(), heads, T, hd);
  auto full = g.block(0, d, false);  // the Gram rounded from its double-double sums
  const double t1 = now_seconds();
  const double flops = double(tokens) * d * (d + 1);  // dsyrk: n d (d + 1)
  std::printf("Gram accumulation, %d tokens x %d columns: %.2f s, %.1f GFLOP/s = %.0f%% of dgemm\n",
              tokens, d, t1 - t0, flops / (t1 - t0) / 1e9,
              100.0 * flops / (t1 - t0) / 1e9 / ceiling);

  const double t2 = now_seconds();
  singular_values_from_gram(std::move(full), d);
  const double t3 = now_seconds();
  for (int h = 0; h < heads; ++h) singular_values_from_gram(g.block(h * hd, hd, false), hd);
  for (int j = 0; j < 16; ++j)
    singular_values_from_gram(g.block(j * 2 * hd, 2 * hd, false), 2 * hd);
  const double t4 = now_seconds();
  std::printf("eigendecomposition: layer (%dx%d) %.2f s; 32 heads + 16 groups %.2f s\n", d, d,
              t3 - t2, t4 - t3);
  std::printf(
      "one 7B-shaped layer over %d tokens: %.2f s in all (Gram memory %.0f MB per "
      "layer and tensor)\n",
      tokens, t4 - t0, double(d) * d * 8 / 1e6);
  return 0;
}
