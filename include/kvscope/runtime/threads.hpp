// One knob for every thread pool kvscope uses (OpenMP loops and OpenBLAS).
#pragma once

#include <string>

namespace kvscope {

// n <= 0 means "all cores". Returns the number actually set.
int set_threads(int n);
// What set_threads(n) would set, without setting it.
int resolve_threads(int n);
int get_threads();

// e.g. "OpenBLAS 0.3.21 (openmp, Zen)"; recorded in manifests and benchmark output.
std::string blas_info();

}  // namespace kvscope
