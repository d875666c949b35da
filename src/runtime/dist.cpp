#include "kvscope/runtime/dist.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#ifdef KVSCOPE_HAVE_MPI
// The C API only: the deprecated C++ bindings would need libmpi_cxx.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace kvscope::dist {

namespace {
int g_rank = 0, g_size = 1, g_local = 1;
bool g_started = false;
int64_t g_bytes = 0;     // handed to reductions (bytes_reduced)
double g_seconds = 0.0;  // inside collectives (seconds_in_collectives)

// Adds the wall time of one collective (waiting for the slowest rank included) to g_seconds.
struct Timed {
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  ~Timed() {
    g_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

std::string this_host() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

// Whether an MPI launcher started this process: Open MPI, PMI (MPICH, Intel MPI) and PMIx
// (Slurm's srun --mpi=pmix) each leave a variable. A plain `kvscope run` never starts MPI,
// so it needs no MPI runtime to be present or configured.
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

#ifdef KVSCOPE_HAVE_MPI
// MPI reduction over (hi, lo) pairs: inout = in + inout.
void add_pairs(void* in, void* inout, int* len, MPI_Datatype*) {
  const double* a = static_cast<const double*>(in);
  double* b = static_cast<double*>(inout);
  for (int i = 0; i < *len; ++i) add_pair_dd(b[2 * i], b[2 * i + 1], a[2 * i], a[2 * i + 1]);
}
#endif
}  // namespace

bool built_with_mpi() {
#ifdef KVSCOPE_HAVE_MPI
  return true;
#else
  return false;
#endif
}

void init(int* argc, char*** argv) {
#ifdef KVSCOPE_HAVE_MPI
  if (!launched_by_mpi()) return;
  int provided = 0;
  // Only the main thread calls MPI; OpenMP threads compute between the calls.
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  g_started = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  MPI_Comm_size(local, &g_local);
  MPI_Comm_free(&local);
#else
  (void)argc, (void)argv;
#endif
}

void finalize() {
#ifdef KVSCOPE_HAVE_MPI
  if (g_started) MPI_Finalize();
  g_started = false;
#endif
}

void abort_job(int code) {
#ifdef KVSCOPE_HAVE_MPI
  if (g_started && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
  (void)code;
#endif
}

int rank() {
  return g_rank;
}
int size() {
  return g_size;
}
int ranks_on_host() {
  return g_local;
}
int64_t bytes_reduced() {
  return g_bytes;
}
double seconds_in_collectives() {
  return g_seconds;
}

std::vector<std::string> hosts() {
  const std::string me = this_host();
#ifdef KVSCOPE_HAVE_MPI
  if (g_size > 1) {
    constexpr int kLen = 256;
    std::vector<char> mine(kLen, 0), all(size_t(kLen) * size_t(g_size), 0);
    std::memcpy(mine.data(), me.data(), std::min<size_t>(me.size(), kLen - 1));
    MPI_Allgather(mine.data(), kLen, MPI_CHAR, all.data(), kLen, MPI_CHAR, MPI_COMM_WORLD);
    std::vector<std::string> out;
    for (int r = 0; r < g_size; ++r) out.emplace_back(all.data() + size_t(r) * kLen);
    return out;
  }
#endif
  return {me};
}

void add_double_double(std::span<double> hi, std::span<double> lo, std::span<const double> other_hi,
                       std::span<const double> other_lo) {
  for (size_t i = 0; i < hi.size(); ++i) add_pair_dd(hi[i], lo[i], other_hi[i], other_lo[i]);
}

Block block_of(int64_t n, int r, int ranks) {
  const int64_t base = n / ranks, extra = n % ranks;
  return {r * base + std::min<int64_t>(r, extra), base + (r < extra ? 1 : 0)};
}

void barrier() {
#ifdef KVSCOPE_HAVE_MPI
  if (g_size > 1) {
    const Timed timed;
    MPI_Barrier(MPI_COMM_WORLD);
  }
#endif
}

void gather_owned(void* bytes, size_t item_bytes, size_t n) {
  if (g_size == 1) return;
  char* p = static_cast<char*>(bytes);
  g_bytes += int64_t(item_bytes * n);
  const Timed timed;
  for (size_t i = 0; i < n; ++i)
    if (!mine(i)) std::memset(p + i * item_bytes, 0, item_bytes);
#ifdef KVSCOPE_HAVE_MPI
  const size_t total = item_bytes * n;
  constexpr size_t kStep = size_t(1) << 30;  // MPI counts are int
  for (size_t off = 0; off < total; off += kStep)
    MPI_Allreduce(MPI_IN_PLACE, p + off, int(std::min(kStep, total - off)), MPI_BYTE, MPI_BOR,
                  MPI_COMM_WORLD);
#endif
}

void sum_double_double(std::span<double> hi, std::span<double> lo) {
  if (g_size == 1) return;
#ifdef KVSCOPE_HAVE_MPI
  const size_t n = hi.size();
  g_bytes += int64_t(16 * n);
  const Timed timed;
  std::vector<double> pairs(2 * n), out(g_rank == 0 ? 2 * n : 0);
  for (size_t i = 0; i < n; ++i) pairs[2 * i] = hi[i], pairs[2 * i + 1] = lo[i];
  MPI_Datatype pair;
  MPI_Type_contiguous(2, MPI_DOUBLE, &pair);
  MPI_Type_commit(&pair);
  MPI_Op op;
  MPI_Op_create(&add_pairs, /*commute=*/0, &op);  // 0: ranks combine in rank order
  constexpr size_t kStep = size_t(1) << 26;
  for (size_t off = 0; off < n; off += kStep) {
    const int cnt = int(std::min(kStep, n - off));
    MPI_Reduce(pairs.data() + 2 * off, g_rank == 0 ? out.data() + 2 * off : nullptr, cnt, pair, op,
               0, MPI_COMM_WORLD);
  }
  if (g_rank == 0) pairs.swap(out);
  // One result for everyone: rank 0's, broadcast (an all-reduce may round differently
  // per rank).
  for (size_t off = 0; off < n; off += kStep)
    MPI_Bcast(pairs.data() + 2 * off, int(std::min(kStep, n - off)), pair, 0, MPI_COMM_WORLD);
  MPI_Op_free(&op);
  MPI_Type_free(&pair);
  for (size_t i = 0; i < n; ++i) hi[i] = pairs[2 * i], lo[i] = pairs[2 * i + 1];
#endif
}

void sum_int64(std::span<int64_t> v) {
  if (g_size == 1) return;
#ifdef KVSCOPE_HAVE_MPI
  g_bytes += int64_t(8 * v.size());
  const Timed timed;
  MPI_Allreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
#endif
}

}  // namespace kvscope::dist
