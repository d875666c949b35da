// Runs across MPI ranks (`mpirun -n N kvscope run|dump ...`): the work of a run is split
// by sequence (windows, probes, questions) and the per-sequence results are brought back
// together in a fixed order, so every table is the same for any N (docs/distributed.md).
//
// Without mpirun (or in a build without MPI) there is one rank and every call here is a
// no-op: the single-process program is the N = 1 case of the same code.
//
// Two ways results come together:
//  - per item (a window's NLL sum, a probe's head sums, a question's score): each item is
//    computed by the one rank that owns it; gather_owned() then gives every rank every
//    item's bytes unchanged, and callers sum them in item order, exactly as one process
//    would.
//  - Gram matrices, too big to keep per sequence: each is a double-double sum (hi, lo) of
//    per-sequence Grams (spectrum.hpp); sum_double_double() adds the ranks' sums in rank
//    order. The rounded result is the correctly rounded sum of the per-sequence Grams
//    whatever the grouping, except for an entry whose sum cancels to ~1e-16 of its terms.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace kvscope::dist {

// Starts MPI when this process was launched by an MPI launcher (mpirun, srun); otherwise
// (or without MPI support) one rank. Call once from main.
void init(int* argc, char*** argv);
void finalize();
// Ends every rank of the job (MPI_Abort) after an error on this one; returns when alone.
void abort_job(int code);

int rank();
int size();
inline bool root() {
  return rank() == 0;
}
bool built_with_mpi();
// Ranks sharing this rank's host (to warn when ranks x threads oversubscribe its cores).
int ranks_on_host();
// Host name of every rank, in rank order.
std::vector<std::string> hosts();

// Item i of a loop over n belongs to rank i % size(): neighbouring items (similar cost)
// spread over the ranks.
inline bool mine(size_t i) {
  return size() == 1 || int(i % size_t(size())) == rank();
}
// Items [first, first + count) of n in contiguous blocks (dump shards): rank r gets
// n / size() items, the first n % size() ranks one more.
struct Block {
  int64_t first = 0, count = 0;
};
Block block_of(int64_t n, int r, int ranks);
inline Block block_of(int64_t n, int r) {
  return block_of(n, r, size());
}

void barrier();

// Every rank leaves with every item: `bytes` holds n items of item_bytes each; the items
// this rank owns (mine(i)) are kept and the others zeroed, then all ranks' copies are
// combined by bitwise OR, which is exact for any type.
void gather_owned(void* bytes, size_t item_bytes, size_t n);
template <class T>
void gather_owned(std::vector<T>& items, size_t per_item = 1) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (size() > 1) gather_owned(items.data(), sizeof(T) * per_item, items.size() / per_item);
}

// (hi, lo) += (x_hi, x_lo): x_hi + hi = s + e exactly (Knuth's two-sum), and the low parts
// absorb e.
inline void add_pair_dd(double& hi, double& lo, double x_hi, double x_lo) {
  const double y = hi, s = x_hi + y, bb = s - x_hi;
  const double e = (x_hi - (s - bb)) + (y - bb);
  hi = s;
  lo = e + (x_lo + lo);
}

// (hi, lo) += (other_hi, other_lo) element-wise: the hi sums' rounding errors are kept in lo
// (Knuth's two-sum), so hi + lo carries about 106 bits. The one rule used to combine
// double-double sums, by ranks and by GramAccumulator::merge.
void add_double_double(std::span<double> hi, std::span<double> lo, std::span<const double> other_hi,
                       std::span<const double> other_lo);

// Element-wise sum over ranks of double-double values (hi[i] + lo[i]), added in rank order;
// every rank gets the result.
void sum_double_double(std::span<double> hi, std::span<double> lo);
void sum_int64(std::span<int64_t> v);

// Bytes this rank has handed to reductions so far (the payload of each collective, not
// the messages of its algorithm): what docs/distributed.md scales to more ranks.
int64_t bytes_reduced();
// Seconds this rank has spent inside collectives (barriers included): communication plus
// waiting for slower ranks.
double seconds_in_collectives();

}  // namespace kvscope::dist
