// Shared by the benchmarks: timing, the machine's own sgemm ceiling, FLOP counts, RSS.
#pragma once

#include <chrono>
#include <string>

#include "kvscope/model/model_config.hpp"

namespace kvscope::bench {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best GFLOP/s of C[m,n] = A[m,k] * B[n,k]^T over `reps` runs (the same call shape the
// forward pass makes), after one warm-up.
double sgemm_gflops(int m, int n, int k, int reps = 10);

// FLOPs of a prefill of T tokens starting at an empty cache: projections, causal
// attention (QK^T and AV over the visible half), SwiGLU, classifier on `logit_rows`.
double prefill_flops(const ModelConfig& c, int T, int logit_rows);
// FLOPs of decoding one token at a context of `ctx` tokens already cached.
double decode_flops(const ModelConfig& c, int ctx);

// Peak resident set size of this process so far, in bytes (VmHWM).
long peak_rss_bytes();

// The machine's sequential read rate in GB/s: the best of `reps` passes summing a `bytes`
// buffer (bigger than the caches) on every OpenMP thread, in AVX2 with the decoding
// kernels' prefetch distance. A decoding step reads every
// weight once, so weight bytes / this rate is the fastest a token can be.
double read_bandwidth_gbs(size_t bytes = size_t(1) << 30, int reps = 3);

}  // namespace kvscope::bench
