// One knob for every thread pool kvscope uses (OpenMP loops and OpenBLAS).
#pragma once

#include <string>

namespace kvscope {

// n <= 0 means "all cores". Returns the number actually set. Throws Error when n is over
// max_threads().
int set_threads(int n);
// What set_threads(n) would set, without setting it (throws as set_threads does).
int resolve_threads(int n);
// The most threads kvscope accepts: 4 x the cores (at least 8). More only oversubscribe,
// and tens of thousands make OpenMP / OpenBLAS exhaust memory creating them.
int max_threads();
int get_threads();

// e.g. "OpenBLAS 0.3.21 (openmp, Zen)"; recorded in manifests and benchmark output.
std::string blas_info();

}  // namespace kvscope
