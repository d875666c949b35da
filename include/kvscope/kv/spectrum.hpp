// Singular values of tall activation matrices without holding them: stream the rows
// into a Gram matrix X^T X in double (BLAS dsyrk, memory O(d^2) whatever the number of
// rows; sums kept in double-double, see below), then eigendecompose it (LAPACK dsyevd); the
// singular values of X are the square roots of its eigenvalues. The Gram of a layer's K (all KV
// heads side by side) holds the Gram of every head and every group of adjacent heads as diagonal
// blocks, so one pass gives all three views.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvscope {

class GramAccumulator {
 public:
  explicit GramAccumulator(int dim);

  int dim() const { return d_; }
  int64_t rows() const { return n_; }
  // Adds the rows of x [n, dim] (row stride ld floats).
  void add_rows(const float* x, int64_t n, int64_t ld);
  // Adds head-major data x [heads, T, hd] (heads * hd == dim) as T rows
  // [x[0][t], x[1][t], ...] (all heads of one token side by side), skipping the first
  // `skip` tokens. Head h starts at x + h * head_stride floats (default T * hd).
  void add_heads(const float* x, int heads, int T, int hd, int skip = 0, int64_t head_stride = -1);
  // Adds another accumulator's rows (as if its add calls had been made on this one).
  void merge(const GramAccumulator& other);
  // Sums the accumulators of every MPI rank (runtime/dist.hpp); a no-op in one process.
  void reduce_across_ranks();
  // The Gram of columns [offset, offset + size): [size, size] row-major, full (both
  // triangles). Centred: minus n * mean mean^T (the covariance scaled by n).
  std::vector<double> block(int offset, int size, bool centred) const;

 private:
  // Each add call is one unit (a sequence's rows): its Gram (dsyrk in double) and column
  // sums are computed apart and then added into double-double sums. A unit's part depends
  // only on its rows, and the double-double sum rounds to the same double whatever order
  // or grouping the units come in, so the result does not depend on how sequences are
  // split across MPI ranks (nor on whether rows crossed a staging boundary).
  size_t packed_size() const;
  size_t packed_row(int i) const;  // where row i's entries (i, i..d-1) start in hi_ / lo_
  void begin_call();
  double* stage_row();
  void stage_done();
  void flush_stage();
  void end_call();
  int d_;
  int64_t n_ = 0;
  std::vector<double> hi_, lo_;          // [d (d + 1) / 2] upper triangle, packed by rows
  std::vector<double> sum_hi_, sum_lo_;  // [d] column sums (for centring)
};

// Singular values (descending) from a Gram matrix g [d, d] (full, symmetric) via
// LAPACKE_dsyevd. Eigenvalues below d * eps * largest cannot be told from zero in
// double precision (the Gram squares the condition number): they are reported as 0.
std::vector<double> singular_values_from_gram(std::vector<double> g, int d);

// Energy measures of a spectrum (energy = squared singular values).
struct EnergySummary {
  int dim = 0;
  int rank50 = 0, rank75 = 0, rank90 = 0, rank95 = 0, rank99 = 0;  // values needed for p%
  double top25 = 0.0, top50 = 0.0;  // energy share of the top 25% / 50% of the values
  double stable_rank = 0.0;         // sum sigma^2 / sigma_max^2
};
EnergySummary summarize_energy(const std::vector<double>& sv);

// Share of the energy held by each value, and the running total ([i] = first i+1 values).
std::vector<double> energy_shares(const std::vector<double>& sv);

}  // namespace kvscope
