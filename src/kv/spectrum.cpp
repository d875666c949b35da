#include "kvscope/kv/spectrum.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kvscope/io/error.hpp"

namespace kvscope {

namespace {
constexpr int kStageRows = 512;  // rows converted to double per dsyrk
}

GramAccumulator::GramAccumulator(int dim)
    : d_(dim),
      g_(size_t(dim) * dim, 0.0),
      sum_(size_t(dim), 0.0),
      stage_(size_t(kStageRows) * dim) {
  KV_ASSERT(dim > 0);
}

void GramAccumulator::flush() {
  if (staged_ == 0) return;
  // g += S^T S with S [staged, d] row-major (upper triangle of g).
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d_, staged_, 1.0, stage_.data(), d_, 1.0,
              g_.data(), d_);
  staged_ = 0;
}

void GramAccumulator::add_rows(const float* x, int64_t n, int64_t ld) {
  for (int64_t r = 0; r < n; ++r) {
    double* dst = stage_.data() + size_t(staged_) * d_;
    const float* src = x + r * ld;
    for (int j = 0; j < d_; ++j) {
      dst[j] = src[j];
      sum_[size_t(j)] += src[j];
    }
    ++n_;
    if (++staged_ == kStageRows) flush();
  }
}

void GramAccumulator::add_heads(const float* x, int heads, int T, int hd, int skip,
                                int64_t head_stride) {
  KV_ASSERT(heads * hd == d_);
  if (head_stride < 0) head_stride = int64_t(T) * hd;
  for (int t = skip; t < T; ++t) {
    double* dst = stage_.data() + size_t(staged_) * d_;
    for (int h = 0; h < heads; ++h) {
      const float* src = x + h * head_stride + int64_t(t) * hd;
      for (int i = 0; i < hd; ++i) {
        dst[h * hd + i] = src[i];
        sum_[size_t(h * hd + i)] += src[i];
      }
    }
    ++n_;
    if (++staged_ == kStageRows) flush();
  }
}

std::vector<double> GramAccumulator::block(int offset, int size, bool centred) {
  KV_ASSERT(offset >= 0 && size > 0 && offset + size <= d_);
  flush();
  std::vector<double> b(size_t(size) * size);
  for (int i = 0; i < size; ++i)
    for (int j = i; j < size; ++j) {
      double v = g_[size_t(offset + i) * d_ + size_t(offset + j)];  // upper triangle
      if (centred && n_ > 0) v -= sum_[size_t(offset + i)] * sum_[size_t(offset + j)] / double(n_);
      b[size_t(i) * size + j] = b[size_t(j) * size + i] = v;
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
