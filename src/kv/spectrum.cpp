#include "kvscope/kv/spectrum.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kvscope/io/error.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/ops.hpp"

namespace kvscope {

namespace {
constexpr int kStageRows = 512;  // rows converted to double per dsyrk

// Scratch for one add call: rows staged in double [kStageRows, d], their Gram [d, d] and
// column sums [d]. Only needed inside a call, so one per thread serves every accumulator.
struct Scratch {
  std::vector<double> stage, part, sum;
  int staged = 0;
  bool any = false;  // part holds rows of this call
};
thread_local Scratch t_scratch;

}  // namespace

GramAccumulator::GramAccumulator(int dim)
    : d_(dim),
      hi_(packed_size(), 0.0),
      lo_(packed_size(), 0.0),
      sum_hi_(size_t(dim), 0.0),
      sum_lo_(size_t(dim), 0.0) {
  KV_ASSERT(dim > 0);
}

size_t GramAccumulator::packed_size() const {
  return packed_row(d_);
}

size_t GramAccumulator::packed_row(int i) const {
  // Rows 0..i-1 hold d, d-1, ..., d-i+1 entries.
  return size_t(i) * size_t(2 * d_ - i + 1) / 2;
}

void GramAccumulator::begin_call() {
  Scratch& s = t_scratch;
  const size_t dd = size_t(d_) * d_;
  if (s.stage.size() < size_t(kStageRows) * d_) s.stage.resize(size_t(kStageRows) * d_);
  if (s.part.size() < dd) s.part.resize(dd);
  s.sum.assign(size_t(d_), 0.0);
  s.staged = 0;
  s.any = false;
}

void GramAccumulator::stage_done() {
  Scratch& s = t_scratch;
  if (++s.staged < kStageRows) return;
  flush_stage();
}

double* GramAccumulator::stage_row() {
  return t_scratch.stage.data() + size_t(t_scratch.staged) * d_;
}

void GramAccumulator::flush_stage() {
  Scratch& s = t_scratch;
  if (s.staged == 0) return;
  // part (+)= S^T S with S [staged, d] row-major (upper triangle of part).
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d_, s.staged, 1.0, s.stage.data(), d_,
              s.any ? 1.0 : 0.0, s.part.data(), d_);
  s.any = true;
  s.staged = 0;
}

void GramAccumulator::end_call() {
  Scratch& s = t_scratch;
  flush_stage();
  if (!s.any) return;
  // Element by element, so splitting rows over threads changes no bit; for wide Grams the
  // fold is memory-bound and costs as much as a third of the dsyrk done alone.
  const double* part = s.part.data();
  const double* sum = s.sum.data();
#pragma omp parallel for schedule(dynamic, 16) if (packed_size() >= size_t(kParallelMin))
  for (int i = 0; i < d_; ++i) {
    const double* row = part + size_t(i) * d_;
    size_t k = packed_row(i);
    for (int j = i; j < d_; ++j, ++k) dist::add_pair_dd(hi_[k], lo_[k], row[j], 0.0);
    dist::add_pair_dd(sum_hi_[size_t(i)], sum_lo_[size_t(i)], sum[i], 0.0);
  }
}

void GramAccumulator::add_rows(const float* x, int64_t n, int64_t ld) {
  begin_call();
  double* sum = t_scratch.sum.data();
  for (int64_t r = 0; r < n; ++r) {
    double* dst = stage_row();
    const float* src = x + r * ld;
    for (int j = 0; j < d_; ++j) {
      dst[j] = src[j];
      sum[j] += src[j];
    }
    ++n_;
    stage_done();
  }
  end_call();
}

void GramAccumulator::add_heads(const float* x, int heads, int T, int hd, int skip,
                                int64_t head_stride) {
  KV_ASSERT(heads * hd == d_);
  if (head_stride < 0) head_stride = int64_t(T) * hd;
  begin_call();
  double* sum = t_scratch.sum.data();
  for (int t = skip; t < T; ++t) {
    double* dst = stage_row();
    for (int h = 0; h < heads; ++h) {
      const float* src = x + h * head_stride + int64_t(t) * hd;
      for (int i = 0; i < hd; ++i) {
        dst[h * hd + i] = src[i];
        sum[h * hd + i] += src[i];
      }
    }
    ++n_;
    stage_done();
  }
  end_call();
}

void GramAccumulator::merge(const GramAccumulator& o) {
  KV_ASSERT(o.d_ == d_);
  dist::add_double_double(hi_, lo_, o.hi_, o.lo_);
  dist::add_double_double(sum_hi_, sum_lo_, o.sum_hi_, o.sum_lo_);
  n_ += o.n_;
}

void GramAccumulator::reduce_across_ranks() {
  dist::sum_double_double(hi_, lo_);
  dist::sum_double_double(sum_hi_, sum_lo_);
  dist::sum_int64(std::span<int64_t>(&n_, 1));
}

std::vector<double> GramAccumulator::block(int offset, int size, bool centred) const {
  KV_ASSERT(offset >= 0 && size > 0 && offset + size <= d_);
  std::vector<double> b(size_t(size) * size);
  for (int i = 0; i < size; ++i) {
    const int gi = offset + i;
    const size_t row = packed_row(gi);
    const double si = sum_hi_[size_t(gi)] + sum_lo_[size_t(gi)];
    for (int j = i; j < size; ++j) {
      const int gj = offset + j;
      const size_t k = row + size_t(gj - gi);
      double v = hi_[k] + lo_[k];
      if (centred && n_ > 0) v -= si * (sum_hi_[size_t(gj)] + sum_lo_[size_t(gj)]) / double(n_);
      b[size_t(i) * size + j] = b[size_t(j) * size + i] = v;
    }
  }
  return b;
}

std::vector<double> singular_values_from_gram(std::vector<double> g, int d) {
  std::vector<double> w(static_cast<size_t>(d));
  const lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'N', 'U', d, g.data(), d, w.data());
  KV_CHECK(info == 0, "LAPACKE_dsyevd failed on a {}x{} Gram matrix (info = {})", d, d, info);
  const double top = std::max(0.0, w.back());  // ascending order
  const double floor = double(d) * std::numeric_limits<double>::epsilon() * top;
  std::vector<double> sv(static_cast<size_t>(d));
  for (int i = 0; i < d; ++i) {
    const double lam = w[size_t(d - 1 - i)];
    sv[size_t(i)] = lam > floor ? std::sqrt(lam) : 0.0;
  }
  return sv;
}

std::vector<double> energy_shares(const std::vector<double>& sv) {
  double total = 0.0;
  for (double s : sv) total += s * s;
  std::vector<double> e(sv.size());
  for (size_t i = 0; i < sv.size(); ++i) e[i] = total > 0 ? sv[i] * sv[i] / total : 0.0;
  return e;
}

EnergySummary summarize_energy(const std::vector<double>& sv) {
  EnergySummary s;
  s.dim = int(sv.size());
  const std::vector<double> e = energy_shares(sv);
  // Smallest k with cumulative share >= p (a hair of tolerance for rounding in the sum).
  auto rank_for = [&](double p) {
    double c = 0.0;
    for (size_t i = 0; i < e.size(); ++i) {
      c += e[i];
      if (c >= p - 1e-12) return int(i + 1);
    }
    return int(e.size());
  };
  s.rank50 = rank_for(0.50);
  s.rank75 = rank_for(0.75);
  s.rank90 = rank_for(0.90);
  s.rank95 = rank_for(0.95);
  s.rank99 = rank_for(0.99);
  // Top 25% / 50% of the values: the first ceil(p * d) of them.
  auto top = [&](double p) {
    const size_t k = size_t(std::ceil(p * double(e.size()) - 1e-9));
    double c = 0.0;
    for (size_t i = 0; i < k && i < e.size(); ++i) c += e[i];
    return c;
  };
  s.top25 = top(0.25);
  s.top50 = top(0.50);
  double total = 0.0;
  for (double v : sv) total += v * v;
  s.stable_rank = sv.empty() || sv[0] == 0.0 ? 0.0 : total / (sv[0] * sv[0]);
  return s;
}

}  // namespace kvscope
