// When a loop runs on the OpenMP pool (private to the runtime module: <omp.h> stays out
// of the public headers).
#pragma once

#include <omp.h>

#include <cstdint>

#include "kvscope/runtime/ops.hpp"

namespace kvscope {

// Whether a loop of `work` elements (or multiply-adds) should run on the OpenMP pool:
// large enough, more than one thread allowed, and not already inside a parallel region
// (where a nested region would run on one thread anyway). Loops test this instead of
// `omp parallel if (...)` because libgomp still enters a region for a team of one, and
// leaving it costs a futex system call: ~20 per decoded token of a small model.
inline bool worth_threads(int64_t work) {
  return work >= kParallelMin && omp_get_max_threads() > 1 && !omp_in_parallel();
}

// body(i) for i in [0, n): statically split over the pool when worth_threads(work), else
// inline on the calling thread.
template <class Body>
void parallel_for(int64_t n, int64_t work, const Body& body) {
  if (!worth_threads(work)) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace kvscope
