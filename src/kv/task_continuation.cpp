#include <cmath>
#include <vector>

#include "kvscope/kv/policy_eval.hpp"
#include "task_util.hpp"

namespace kvscope {

namespace {

// log_softmax of logits [V] into out (double: KL of nearly equal distributions).
void log_softmax(std::span<const float> logits, std::vector<double>& out) {
  double mx = -INFINITY, z = 0.0;
  for (float x : logits) mx = std::max(mx, double(x));
  for (float x : logits) z += std::exp(double(x) - mx);
  const double lz = mx + std::log(z);
  out.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = double(logits[i]) - lz;
}

}  // namespace

std::vector<ContinuationScore> run_continuation(const Model& m, std::span<const int32_t> stream,
                                                const ContinuationTask& t, const TaskVariants& v) {
  const ModelConfig& c = m.config;
  const int L = t.window > 0 ? t.window : c.default_seq_len();
  KV_CHECK(L <= c.max_seq_len && L >= 4, "continuation task: window {} must lie in [4, {}]", L,
           c.max_seq_len);
  const int P = std::clamp(int(std::lround(t.prefill * L)), 2, L - 2), D = L - 1 - P;
  const std::vector<Variant> resolved = v.at(P);
  KV_CHECK(!resolved.empty() && !resolved[0].policy,
           "continuation task: the first variant must be the full cache");
  const size_t np = v.count;
  // Per window: [nll x np | kl x np | top1 x np], each block paired with its full cache.
  std::vector<TaskScore> sum = sum_items(
      size_t(t.windows), 3 * np,
      [&](size_t w, TaskScore* q) {
        const auto chunk = slice(stream, int64_t(w) * (L - 1), L - 1, "continuation task");
        std::vector<int32_t> s{c.bos_id};
        s.insert(s.end(), chunk.begin(), chunk.end());
        const std::span<const int32_t> all(s), next = all.subspan(size_t(P), size_t(D));
        std::vector<std::vector<double>> full(static_cast<size_t>(D));  // [D][V] log-probs
        std::vector<int> full_top(static_cast<size_t>(D));
        std::vector<double> lp;
        const std::vector<double> share = for_each_variant(
            m, all.subspan(0, size_t(P)), D, resolved, v, [&](size_t pi, CompressedRun& run) {
              decode(run, next, [&](size_t k, std::span<const float> lg) {
                log_softmax(lg, lp);
                if (pi == 0) full[k] = lp, full_top[k] = argmax(lg);
                double kl = 0.0;
                for (size_t i = 0; i < lp.size(); ++i)
                  kl += std::exp(full[k][i]) * (full[k][i] - lp[i]);
                q[pi].score -= lp[size_t(s[size_t(P) + k + 1])];
                q[np + pi].score += std::max(0.0, kl);
                q[2 * np + pi].score += argmax(lg) == full_top[k];
                ++q[pi].count, ++q[np + pi].count, ++q[2 * np + pi].count;
              });
            });
        for (size_t pi = 0; pi < np; ++pi)
          q[pi].kv_share = q[np + pi].kv_share = q[2 * np + pi].kv_share = share[pi];
      },
      false, np);
  std::vector<ContinuationScore> out(np);
  for (size_t pi = 0; pi < np; ++pi) {
    out[pi] = {sum[pi], sum[np + pi], sum[2 * np + pi]};
    for (TaskScore* r : {&out[pi].nll, &out[pi].kl, &out[pi].top1}) {
      r->score /= double(r->count);
      r->kv_share /= double(t.windows);
    }
  }
  return out;
}

}  // namespace kvscope
