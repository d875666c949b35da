#include "kvscope/runtime/threads.hpp"

#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>

#include <thread>

namespace kvscope {

int resolve_threads(int n) {
  return n > 0 ? n : int(std::max(1u, std::thread::hardware_concurrency()));
}

int set_threads(int n) {
  n = resolve_threads(n);
  omp_set_num_threads(n);
  // Parallel loops inside parallel loops (a forward pass per thread) run serially.
  omp_set_max_active_levels(1);
  openblas_set_num_threads(n);
  return n;
}

int get_threads() {
  return omp_get_max_threads();
}

std::string blas_info() {
  const int par = openblas_get_parallel();
  const char* kind = par == 0 ? "sequential" : par == 1 ? "pthreads" : "openmp";
  return fmt::format("{} ({}, {} threads, core {})", openblas_get_config(), kind,
                     openblas_get_num_threads(), openblas_get_corename());
}

}  // namespace kvscope
