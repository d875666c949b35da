// Internal to the kv module's tasks (policy_eval.cpp, task_continuation.cpp): item sums
// across MPI ranks with paired errors, slices of a token stream, decoding through a run.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <span>

#include "kvscope/io/error.hpp"
#include "kvscope/kv/policy_eval.hpp"
#include "kvscope/runtime/dist.hpp"

namespace kvscope {

inline int argmax(std::span<const float> v) {
  return int(std::max_element(v.begin(), v.end()) - v.begin());
}

// Tokens [offset, offset + n) of the stream, wrapping the start so that every trial fits.
inline std::span<const int32_t> slice(std::span<const int32_t> stream, int64_t offset, int64_t n,
                                      const char* what) {
  KV_CHECK(int64_t(stream.size()) >= n, "{}: the text has {} tokens, the task needs {}", what,
           stream.size(), n);
  const int64_t room = int64_t(stream.size()) - n + 1;
  return stream.subspan(size_t(offset % room), size_t(n));
}

// Runs item(i, slots) for the items i of [0, n) this MPI rank owns (all of them in one
// process), each filling `width` TaskScores; every rank then gets every item's slots, and
// returns their sums slot by slot, added in item order (the same sums for any rank count).
// Each item's own value (score / count, or aux / count with by_aux) feeds the error sums,
// paired with the first slot of its block of `block` slots (0: the whole width) on the same
// item; slots with no count (a variant out of reach) add nothing. With `values`, each
// item's own values are appended to it, [n x width] row-major, NaN where no count: what
// pairs variants other than the first (kv_cache_policies' paired.csv).
template <class F>
std::vector<TaskScore> sum_items(size_t n, size_t width, F&& item, bool by_aux = false,
                                 size_t block = 0, std::vector<double>* values = nullptr) {
  if (block == 0) block = width;
  std::vector<TaskScore> v(n * width);
  for (size_t i = 0; i < n; ++i)
    if (dist::mine(i)) item(i, v.data() + i * width);
  dist::gather_owned(v, width);
  std::vector<TaskScore> sum(width);
  const auto value = [&](const TaskScore& t) {
    return (by_aux ? t.aux : t.score) / double(t.count);
  };
  for (size_t i = 0; i < v.size(); ++i) {
    TaskScore& r = sum[i % width];
    r.score += v[i].score;
    r.aux += v[i].aux;
    r.count += v[i].count;
    r.kv_share += v[i].kv_share;
    if (values) values->push_back(v[i].count > 0 ? value(v[i]) : NAN);
    const TaskScore& first = v[i - i % width + (i % width) / block * block];
    if (v[i].count > 0 && first.count > 0) {
      const double x = value(v[i]), d = x - value(first);
      ++r.items;
      r.sx += x, r.sxx += x * x, r.sd += d, r.sdd += d * d;
    }
  }
  return sum;
}

// Decodes `tokens` one at a time; calls score(k, logits) for the prediction after token k.
inline void decode(CompressedRun& run, std::span<const int32_t> tokens,
                   const std::function<void(size_t, std::span<const float>)>& score) {
  for (size_t k = 0; k < tokens.size(); ++k) score(k, run.step(tokens[k]));
}

}  // namespace kvscope
