#include "bench_util.hpp"

#include <cblas.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
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

namespace {

// Sums [p, p + n) of 32-byte vectors with four independent accumulators, asking for the
// lines 1 KiB ahead as the decoding kernels do (stored_gemv_avx2.cpp): the reads the
// kernels could at best make. Falls back to the scalar sum without AVX2.
#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i) + 1024, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + i) + 1088, _MM_HINT_T0);
    const auto* v = reinterpret_cast<const __m256i*>(p + i);
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(v));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + 1));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + 2));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + 3));
  }
  alignas(32) uint64_t l[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(l),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t t = l[0] + l[1] + l[2] + l[3];
  for (; i < n; ++i) t += p[i];
  return t;
}
#endif

uint64_t sum_words(const uint64_t* p, size_t n) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) return sum_avx2(p, n);
#endif
  uint64_t t = 0;
  for (size_t i = 0; i < n; i += 4) t += (p[i] + p[i + 1]) + (p[i + 2] + p[i + 3]);
  return t;
}

}  // namespace

double read_bandwidth_gbs(size_t bytes, int reps) {
  const size_t n = bytes / sizeof(uint64_t) / 64 * 64;  // whole 512-byte chunks
  // 32-byte aligned for the vector loads.
  std::unique_ptr<uint64_t[], decltype(&std::free)> buf(
      static_cast<uint64_t*>(std::aligned_alloc(64, n * sizeof(uint64_t))), &std::free);
  for (size_t i = 0; i < n; ++i) buf[i] = i;  // touched: every page resident
  double best = 0;
  volatile uint64_t sink = 0;
  constexpr size_t kChunk = size_t(1) << 20;  // words per task: 8 MiB, contiguous per thread
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_seconds();
    uint64_t total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (size_t c = 0; c < n; c += kChunk)
      total += sum_words(buf.get() + c, std::min(kChunk, n - c));
    const double dt = now_seconds() - t0;
    sink = sink + total;
    best = std::max(best, double(n * sizeof(uint64_t)) / dt / 1e9);
  }
  return best;
}

}  // namespace kvscope::bench
