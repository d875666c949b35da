#include "kvscope/kv/retrieval_heads.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "kvscope/io/error.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/perplexity.hpp"

namespace kvscope {

std::vector<int32_t> make_probe(int32_t bos, const ProbeSpec& p) {
  KV_CHECK(p.block >= 1 && p.repeats >= 2, "probe: block {} must be >= 1 and repeats {} >= 2",
           p.block, p.repeats);
  KV_CHECK(p.token_lo >= 0 && p.token_hi > p.token_lo, "probe: token id range [{}, {}) is empty",
           p.token_lo, p.token_hi);
  // std::mt19937_64 and our own index arithmetic (not std::uniform_int_distribution or
  // std::shuffle, whose algorithms vary between standard libraries) keep the probe the
  // same everywhere.
  std::mt19937_64 rng(p.seed);
  const int range = p.token_hi - p.token_lo;
  std::vector<int32_t> block(static_cast<size_t>(p.block));
  if (p.block <= range) {
    std::vector<int32_t> ids(static_cast<size_t>(range));
    std::iota(ids.begin(), ids.end(), p.token_lo);
    for (int i = 0; i < p.block; ++i) {  // partial Fisher-Yates
      const size_t j = size_t(i) + size_t(rng() % uint64_t(range - i));
      std::swap(ids[size_t(i)], ids[j]);
      block[size_t(i)] = ids[size_t(i)];
    }
  } else {
    for (auto& t : block) t = p.token_lo + int32_t(rng() % uint64_t(range));
  }
  std::vector<int32_t> out;
  out.reserve(1 + size_t(p.repeats) * p.block);
  out.push_back(bos);
  for (int r = 0; r < p.repeats; ++r) out.insert(out.end(), block.begin(), block.end());
  return out;
}

HeadScorer::HeadScorer(int n_layers, int n_heads, int n_kv_heads, int block)
    : n_layers_(n_layers),
      n_heads_(n_heads),
      n_kv_(n_kv_heads),
      block_(block),
      echo_(size_t(n_layers) * n_heads, 0.0),
      ind_(size_t(n_layers) * n_heads, 0.0),
      prev_(size_t(n_layers) * n_heads, 0.0),
      count_(size_t(n_layers) * n_heads, 0) {
  KV_CHECK(block >= 1 && n_kv_heads >= 1 && n_heads % n_kv_heads == 0,
           "HeadScorer: block {} with {} heads over {} KV heads", block, n_heads, n_kv_heads);
}

void HeadScorer::on_attention(const AttentionRows& r) {
  const size_t h = size_t(r.layer) * n_heads_ + size_t(r.head);
  double e = 0.0, ind = 0.0, prev = 0.0;
  int64_t n = 0;
  for (int i = 0; i < r.n_q; ++i) {
    // Slot j is position j under the full cache; this row's query sits at the last
    // visible slot.
    const int pos = r.n_keys - r.n_q + i;
    if (pos - 1 < block_) continue;  // BOS or the first copy: no earlier copy to look at
    const float* w = r.weights + size_t(i) * r.n_keys;
    prev += w[pos - 1];
    for (int j = pos - block_; j >= 1; j -= block_) {
      e += w[j];
      ind += w[j + 1];
    }
    ++n;
  }
  echo_[h] += e;
  ind_[h] += ind;
  prev_[h] += prev;
  count_[h] += n;
}

void HeadScorer::add(const Sums& s) {
  for (size_t h = 0; h < echo_.size(); ++h) {
    echo_[h] += s.echo[h];
    ind_[h] += s.induction[h];
    prev_[h] += s.previous[h];
    count_[h] += s.count[h];
  }
}

HeadScores HeadScorer::scores() const {
  HeadScores s;
  s.n_layers = n_layers_;
  s.n_heads = n_heads_;
  s.n_kv_heads = n_kv_;
  const size_t nq = size_t(n_layers_) * n_heads_, nk = size_t(n_layers_) * n_kv_;
  s.echo.assign(nq, 0.0);
  s.induction.assign(nq, 0.0);
  s.previous.assign(nq, 0.0);
  s.kv_echo.assign(nk, -1.0);
  s.kv_induction.assign(nk, -1.0);
  s.kv_echo_from.assign(nk, -1);
  s.kv_induction_from.assign(nk, -1);
  s.queries = count_.empty() ? 0 : count_[0];
  const int group = n_heads_ / n_kv_;
  for (int l = 0; l < n_layers_; ++l)
    for (int h = 0; h < n_heads_; ++h) {
      const size_t i = size_t(l) * n_heads_ + size_t(h);
      KV_CHECK(count_[i] > 0, "HeadScorer: layer {} head {} saw no query inside a repeat", l, h);
      s.echo[i] = echo_[i] / double(count_[i]);
      s.induction[i] = ind_[i] / double(count_[i]);
      s.previous[i] = prev_[i] / double(count_[i]);
      const size_t g = size_t(l) * n_kv_ + size_t(h / group);
      if (s.echo[i] > s.kv_echo[g]) s.kv_echo[g] = s.echo[i], s.kv_echo_from[g] = h;
      if (s.induction[i] > s.kv_induction[g])
        s.kv_induction[g] = s.induction[i], s.kv_induction_from[g] = h;
    }
  return s;
}

int heads_for_share(double share, int n) {
  if (share <= 0.0) return 0;
  // The epsilon keeps 0.25 * 20 = 5 (not 6) despite rounding in the product.
  return std::min(n, int(std::ceil(share * n - 1e-9)));
}

namespace {

void mark_top(const std::vector<double>& score, int count, std::vector<uint8_t>& out) {
  std::vector<int> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return score[size_t(a)] > score[size_t(b)]; });
  for (int i = 0; i < count && i < int(order.size()); ++i) out[size_t(order[size_t(i)])] = 1;
}

}  // namespace

std::vector<uint8_t> select_retrieval_heads(const HeadScores& s, const HeadSelection& sel) {
  const int total = s.n_layers * s.n_kv_heads;
  std::vector<uint8_t> out(size_t(total), 0);
  if (sel.induction_threshold >= 0.0) {
    for (int i = 0; i < total; ++i)
      if (s.kv_induction[size_t(i)] >= sel.induction_threshold) out[size_t(i)] = 1;
  } else {
    mark_top(s.kv_induction, heads_for_share(sel.induction_share, total), out);
  }
  if (sel.echo_threshold >= 0.0) {
    for (int i = 0; i < total; ++i)
      if (s.kv_echo[size_t(i)] >= sel.echo_threshold) out[size_t(i)] = 1;
  } else {
    mark_top(s.kv_echo, heads_for_share(sel.echo_share, total), out);
  }
  return out;
}

std::vector<uint8_t> random_heads(int total, int count, uint64_t seed) {
  KV_CHECK(count >= 0 && count <= total, "random_heads: {} of {} heads", count, total);
  std::mt19937_64 rng(seed);
  std::vector<int> ids(static_cast<size_t>(total));
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<uint8_t> out(static_cast<size_t>(total), 0);
  for (int i = 0; i < count; ++i) {
    const size_t j = size_t(i) + size_t(rng() % uint64_t(total - i));
    std::swap(ids[size_t(i)], ids[j]);
    out[size_t(ids[size_t(i)])] = 1;
  }
  return out;
}

}  // namespace kvscope

namespace kvscope {

int default_token_lo(const ModelConfig& c) {
  return std::max({0, c.bos_id + 1, c.eos_id + 1});
}

ProbeSpec resolve_probe(const Model& m, const ProbeOptions& o, int probe_index) {
  const ModelConfig& c = m.config;
  ProbeSpec p;
  p.repeats = o.repeats;
  p.block = o.block > 0 ? o.block : (c.default_seq_len() - 1) / o.repeats;
  p.seed = o.seed + uint64_t(probe_index);
  p.token_lo = o.token_lo >= 0 ? o.token_lo : default_token_lo(c);
  p.token_hi = o.token_hi > 0 ? o.token_hi : c.vocab_size;
  const int64_t len = 1 + int64_t(p.repeats) * p.block;
  KV_CHECK(p.repeats >= 2, "retrieval probe: repeats must be >= 2, got {}", p.repeats);
  KV_CHECK(p.block >= 1 && len <= c.max_seq_len,
           "retrieval probe: 1 + repeats {} x block {} = {} tokens exceeds the model's context {}",
           p.repeats, p.block, len, c.max_seq_len);
  KV_CHECK(p.token_hi <= c.vocab_size && p.token_lo < p.token_hi,
           "retrieval probe: token ids [{}, {}) are not inside the vocabulary [0, {})", p.token_lo,
           p.token_hi, c.vocab_size);
  return p;
}

double uniform_score(const ProbeSpec& p) {
  double sum = 0;
  int n = 0;
  for (int i = 1 + p.block; i <= p.repeats * p.block; ++i, ++n)
    sum += double((i - 1) / p.block) / (i + 1);
  return sum / n;
}

RetrievalEvidence retrieval_evidence(const HeadScores& s, double uniform, double z) {
  RetrievalEvidence ev;
  const size_t nk = size_t(s.n_layers) * s.n_kv_heads;
  ev.above.assign(nk, 0);
  ev.known = s.probes >= 2 && s.kv_induction_se.size() == nk && s.kv_echo_se.size() == nk;
  if (!ev.known) return ev;
  // A score that did not vary at all across probes (an exactly positional head) gets a tiny
  // floor so that the division is defined.
  auto zscore = [&](double score, double se) { return (score - uniform) / std::max(se, 1e-12); };
  size_t best_i = 0, best_e = 0;
  for (size_t i = 0; i < nk; ++i) {
    const bool ind = zscore(s.kv_induction[i], s.kv_induction_se[i]) > z;
    const bool echo = zscore(s.kv_echo[i], s.kv_echo_se[i]) > z;
    ev.above[i] = ind || echo;
    ev.heads_above += ev.above[i];
    if (s.kv_induction[i] > s.kv_induction[best_i]) best_i = i;
    if (s.kv_echo[i] > s.kv_echo[best_e]) best_e = i;
  }
  ev.best_induction_z = zscore(s.kv_induction[best_i], s.kv_induction_se[best_i]);
  ev.best_echo_z = zscore(s.kv_echo[best_e], s.kv_echo_se[best_e]);
  return ev;
}

HeadScores probe_heads(const Model& m, const ProbeOptions& o, std::vector<double>* copy_nll) {
  KV_CHECK(o.probes >= 1, "retrieval probe: probes must be >= 1, got {}", o.probes);
  const ModelConfig& c = m.config;
  KV_CHECK(c.bos_id >= 0 && c.bos_id < c.vocab_size,
           "retrieval probe: the model has no BOS token (bos_id {})", c.bos_id);
  const ProbeSpec first = resolve_probe(m, o, 0);
  RunState st(c, 1 + first.repeats * first.block);
  ForwardOptions fo;
  fo.logits = copy_nll ? LogitsMode::kAll : LogitsMode::kNone;
  const int B = first.block, R = first.repeats;
  const size_t V = size_t(c.vocab_size);
  // Per probe, its own sums: echo, induction, previous and query count of every query head
  // ([n_layers * n_heads] each; counts are exact in double), then the copy NLL sum of each
  // repeat [R]. Probes are split over MPI ranks and their sums added in probe order, so the
  // scores do not depend on the number of ranks.
  const size_t nq = size_t(c.n_layers) * c.n_heads;
  const size_t width = 4 * nq + size_t(R);
  std::vector<double> per_probe(size_t(o.probes) * width, 0.0);
  for (int i = 0; i < o.probes; ++i) {
    if (!dist::mine(size_t(i))) continue;
    const std::vector<int32_t> probe = make_probe(c.bos_id, resolve_probe(m, o, i));
    HeadScorer one(c.n_layers, c.n_heads, c.n_kv_heads, B);
    fo.observer = &one;
    st.reset();
    const std::span<const float> logits = forward(m, st, probe, fo);  // [1 + R B, V] or none
    double* row = per_probe.data() + size_t(i) * width;
    const HeadScorer::Sums sums = one.sums();
    for (size_t h = 0; h < nq; ++h) {
      row[h] = sums.echo[h];
      row[nq + h] = sums.induction[h];
      row[2 * nq + h] = sums.previous[h];
      row[3 * nq + h] = double(sums.count[h]);
    }
    if (copy_nll)
      for (int p = 1; p < int(probe.size()); ++p)
        row[4 * nq + size_t((p - 1) / B)] +=
            token_nll(logits.subspan(size_t(p - 1) * V, V), probe[size_t(p)]);
  }
  dist::gather_owned(per_probe, width);
  HeadScorer scorer(c.n_layers, c.n_heads, c.n_kv_heads, B);
  // Per-probe scores of every query head, for the noise ([probes][n_layers * n_heads]).
  std::vector<std::vector<double>> per_echo, per_ind;
  if (copy_nll) copy_nll->assign(size_t(R), 0.0);
  for (int i = 0; i < o.probes; ++i) {
    const double* row = per_probe.data() + size_t(i) * width;
    HeadScorer::Sums sums{
        std::vector<double>(row, row + nq), std::vector<double>(row + nq, row + 2 * nq),
        std::vector<double>(row + 2 * nq, row + 3 * nq), std::vector<int64_t>(nq)};
    std::vector<double> e(nq), ind(nq);
    for (size_t h = 0; h < nq; ++h) {
      const double n = row[3 * nq + h];
      sums.count[h] = int64_t(n);
      e[h] = n > 0 ? sums.echo[h] / n : 0.0;
      ind[h] = n > 0 ? sums.induction[h] / n : 0.0;
    }
    scorer.add(sums);
    per_echo.push_back(std::move(e));
    per_ind.push_back(std::move(ind));
    if (copy_nll)
      for (int r = 0; r < R; ++r) (*copy_nll)[size_t(r)] += row[4 * nq + size_t(r)];
  }
  if (copy_nll)
    for (double& x : *copy_nll) x /= double(B) * o.probes;
  HeadScores s = scorer.scores();
  s.probes = o.probes;
  auto standard_errors = [&](const std::vector<std::vector<double>>& per) {
    std::vector<double> se(nq, std::nan(""));
    if (o.probes < 2) return se;
    for (size_t h = 0; h < nq; ++h) {
      double mean = 0, ss = 0;
      for (const auto& p : per) mean += p[h];
      mean /= o.probes;
      for (const auto& p : per) ss += (p[h] - mean) * (p[h] - mean);
      se[h] = std::sqrt(ss / (o.probes - 1) / o.probes);
    }
    return se;
  };
  s.echo_se = standard_errors(per_echo);
  s.induction_se = standard_errors(per_ind);
  const size_t nk = size_t(c.n_layers) * c.n_kv_heads;
  s.kv_echo_se.assign(nk, std::nan(""));
  s.kv_induction_se.assign(nk, std::nan(""));
  for (int l = 0; l < c.n_layers; ++l)
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const size_t k = size_t(l) * c.n_kv_heads + g;
      s.kv_echo_se[k] = s.echo_se[size_t(l) * c.n_heads + size_t(s.kv_echo_from[k])];
      s.kv_induction_se[k] = s.induction_se[size_t(l) * c.n_heads + size_t(s.kv_induction_from[k])];
    }
  return s;
}

InductionSummary summarize_induction(const Model& m, const ProbeOptions& o) {
  const ModelConfig& c = m.config;
  std::vector<double> copy;
  const HeadScores hs = probe_heads(m, o, &copy);
  InductionSummary out;
  const auto best = std::max_element(hs.kv_induction.begin(), hs.kv_induction.end());
  const int at = int(best - hs.kv_induction.begin());
  const auto prev = std::max_element(hs.previous.begin(), hs.previous.end());
  out.best_induction = *best;
  out.uniform = uniform_score(resolve_probe(m, o, 0));
  out.layer = at / c.n_kv_heads, out.kv_head = at % c.n_kv_heads;
  out.best_echo = *std::max_element(hs.kv_echo.begin(), hs.kv_echo.end());
  out.best_previous = *prev;
  out.previous_layer = int(prev - hs.previous.begin()) / c.n_heads;
  out.copy_first = copy[0];
  for (size_t r = 1; r < copy.size(); ++r) out.copy_later += copy[r];
  out.copy_later /= double(copy.size() - 1);
  return out;
}

}  // namespace kvscope
