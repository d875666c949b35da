#include "bench_util.hpp"

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace kvscope::bench {

double sgemm_gflops(int m, int n, int k, int reps) {
  std::vector<float> a(size_t(m) * k), b(size_t(n) * k), c(size_t(m) * n);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& x : a) x = u(rng);
  for (float& x : b) x = u(rng);
  double best = 1e30;
  for (int r = 0; r <= reps; ++r) {
    const double t0 = now_seconds();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.f, a.data(), k, b.data(), k,
                0.f, c.data(), n);
    const double dt = now_seconds() - t0;
    if (r > 0) best = std::min(best, dt);  // r == 0 warms caches and threads
  }
  return 2.0 * m * n * k / best / 1e9;
}

double prefill_flops(const ModelConfig& c, int T, int logit_rows) {
  const double proj =
      2.0 * c.dim * (2.0 * c.q_dim() + 2.0 * c.kv_dim()) + 2.0 * 3.0 * c.dim * c.hidden_dim;
  const double attn = 2.0 * 2.0 * c.head_dim * c.n_heads * (double(T) * (T + 1) / 2.0);
  return c.n_layers * (T * proj + attn) + 2.0 * logit_rows * c.dim * double(c.vocab_size);
}

double decode_flops(const ModelConfig& c, int ctx) {
  const double proj =
      2.0 * c.dim * (2.0 * c.q_dim() + 2.0 * c.kv_dim()) + 2.0 * 3.0 * c.dim * c.hidden_dim;
  const double attn = 2.0 * 2.0 * c.head_dim * c.n_heads * double(ctx + 1);
  return c.n_layers * (proj + attn) + 2.0 * c.dim * double(c.vocab_size);
}

long peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6)) * 1024;
  return -1;
}

double read_bandwidth_gbs(size_t bytes, int reps) {
  const size_t n = bytes / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = i;  // touched: every page resident
  double best = 0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_seconds();
    uint64_t total = 0;
    // Four independent sums per thread, so the adds do not serialise the loads.
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (size_t i = 0; i < n; i += 4) total += (buf[i] + buf[i + 1]) + (buf[i + 2] + buf[i + 3]);
    const double dt = now_seconds() - t0;
    sink = sink + total;
    best = std::max(best, double(n * sizeof(uint64_t)) / dt / 1e9);
  }
  return best;
}

}  // namespace kvscope::bench
