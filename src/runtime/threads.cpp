#include "kvscope/runtime/threads.hpp"

#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>

#include <thread>

#include "kvscope/io/error.hpp"

namespace kvscope {

int max_threads() {
  return int(std::max(8u, 4 * std::thread::hardware_concurrency()));
}

int resolve_threads(int n) {
  if (n <= 0) return int(std::max(1u, std::thread::hardware_concurrency()));
  if (n > max_threads())
    throw Error(
        fmt::format("threads = {} is more than this machine can use (at most {}: 4 x its "
                    "{} cores); use 0 for all cores",
                    n, max_threads(), std::thread::hardware_concurrency()));
  return n;
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
