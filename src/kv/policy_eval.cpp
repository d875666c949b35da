#include "kvscope/kv/policy_eval.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <random>

#include "kvscope/io/error.hpp"
#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "task_util.hpp"

namespace kvscope {

CachePolicy resolve_policy(const PolicySpec& s, const PolicyParams& p, int n) {
  CachePolicy c;
  c.kind = s.kind;
  c.name = s.name;
  c.n_sink = p.n_sink;
  c.s0 = p.s0;
  c.c = p.c;
  c.compensation = s.compensation;
  c.protected_heads = s.protected_heads;
  if (s.kind == PolicyKind::kStreaming || s.kind == PolicyKind::kH2O) {
    KV_CHECK(!s.budget_heads.empty(), "policy '{}': no razor head set to match the budget of",
             s.name);
    CachePolicy razor = c;
    razor.kind = PolicyKind::kRazor;
    razor.compensation = true;
    int64_t total = 0;
    for (uint8_t h : s.budget_heads) total += kept_slots(razor, n, h != 0);
    const int per_head = int(std::lround(double(total) / double(s.budget_heads.size())));
    c.window = std::max(0, per_head - p.n_sink);
    c.budget = std::max(per_head, p.n_sink + 1);
  }
  return c;
}

TaskVariants paper_b_variants(const std::vector<PolicySpec>& specs, const PolicyParams& p,
                              const ModelConfig& c) {
  TaskVariants tv;
  tv.count = specs.size();
  for (const PolicySpec& s : specs) tv.needs.attention_mass |= s.kind == PolicyKind::kH2O;
  tv.at = [specs, p, L = c.n_layers, nkv = c.n_kv_heads](int n) {
    std::vector<Variant> out;
    for (const PolicySpec& s : specs)
      out.push_back(paper_b_variant(resolve_policy(s, p, n), L, nkv, n));
    return out;
  };
  return tv;
}

std::vector<double> for_each_variant(const Model& m, std::span<const int32_t> prefill, int extra,
                                     const std::vector<Variant>& variants, const TaskVariants& tv,
                                     const std::function<void(size_t, CompressedRun&)>& fn) {
  const int capacity = int(prefill.size()) + extra;
  // One prefill for every variant on the task's model whose prefill reads what the full
  // cache holds; a variant on a reduced model, or whose codec stores tokens as written
  // (so the prefill's own attention reads them stored), prefills apart.
  std::optional<CompressedRun> base;
  std::vector<double> share(variants.size(), NAN);
  for (size_t i = 0; i < variants.size(); ++i) {
    const Variant& v = variants[i];
    const bool apart = v.model || (v.codec && v.codec->on_store());
    if (apart) {
      CompressedRun run(v.model ? *v.model : m, capacity, tv.needs, tv.elem_bytes,
                        v.codec && v.codec->on_store() ? v.codec : nullptr, m.config.n_kv_heads);
      run.prefill(prefill);
      if (!run.compress(v, tv.seed)) continue;
      fn(i, run);
      share[i] = run.share();
      continue;
    }
    if (!base) {
      base.emplace(m, capacity, tv.needs, tv.elem_bytes);
      base->prefill(prefill);
    }
    CompressedRun run = base->branch();
    if (!run.compress(v, tv.seed)) continue;
    fn(i, run);
    share[i] = run.share();
  }
  return share;
}

namespace {

// Standard error of the mean of n items with sum s and sum of squares ss (NaN below 2).
double standard_error(double s, double ss, int64_t n) {
  if (n < 2) return NAN;
  const double mean = s / double(n);
  const double var = std::max(0.0, ss / double(n) - mean * mean) * double(n) / double(n - 1);
  return std::sqrt(var / double(n));
}

}  // namespace

double TaskScore::se() const {
  return standard_error(sx, sxx, items);
}

double TaskScore::paired_mean() const {
  return items > 0 ? sd / double(items) : NAN;
}

double TaskScore::paired_se() const {
  return standard_error(sd, sdd, items);
}

int copy_context(const CopyTask& t, const ModelConfig& c) {
  return t.context > 0 ? t.context : c.default_seq_len();
}

int perplexity_window(const PerplexityTask& t, const ModelConfig& c) {
  return t.window > 0 ? t.window : c.default_seq_len();
}

int perplexity_prefill(const PerplexityTask& t, int window) {
  return std::clamp(int(std::lround(t.prefill * window)), 2, window - 2);
}

std::vector<std::vector<TaskScore>> run_copy(const Model& m, std::span<const int32_t> stream,
                                             const CopyTask& t, const TaskVariants& v,
                                             std::vector<std::vector<double>>* items) {
  const ModelConfig& c = m.config;
  const int L = copy_context(t, c), S = t.segment;
  KV_CHECK(L <= c.max_seq_len, "copy task: context {} exceeds the model's {}", L, c.max_seq_len);
  const int F = L - 1 - 2 * S;
  KV_CHECK(S >= 2 && F >= 0, "copy task: two segments of {} tokens do not fit a context of {}", S,
           L);
  const std::vector<Variant> resolved = v.at(L - S);
  const std::vector<Variant> full_only = {Variant{}};
  const size_t np = v.count;
  std::vector<std::vector<TaskScore>> out(t.depths.size(), std::vector<TaskScore>(np));
  for (size_t di = 0; di < t.depths.size(); ++di) {
    const int a = int(std::lround(t.depths[di] * F));
    // Per trial: one score per policy, then the baseline's (hits in score, count).
    std::vector<double> values;
    std::vector<TaskScore> sum = sum_items(
        size_t(t.trials), np + 1,
        [&](size_t tr, TaskScore* r) {
          // Every (depth, trial) its own passage: depths are not scored on the same text.
          const auto src = slice(stream, int64_t(di * size_t(t.trials) + tr) * (F + 2 * S),
                                 F + 2 * S, "copy task");
          const auto seg = src.subspan(0, size_t(S)), alt = src.subspan(size_t(S), size_t(S));
          const auto filler = src.subspan(size_t(2 * S));
          auto context = [&](std::span<const int32_t> first) {  // everything before the repeat
            std::vector<int32_t> s{c.bos_id};
            s.insert(s.end(), filler.begin(), filler.begin() + a);
            s.insert(s.end(), first.begin(), first.end());
            s.insert(s.end(), filler.begin() + a, filler.end());
            return s;
          };
          const std::span<const int32_t> repeat = seg.subspan(0, size_t(S - 1));
          const std::vector<double> share =
              for_each_variant(m, context(seg), S, resolved, v, [&](size_t pi, CompressedRun& run) {
                decode(run, repeat, [&](size_t k, std::span<const float> lg) {
                  r[pi].score += argmax(lg) == seg[k + 1];
                  ++r[pi].count;
                });
              });
          for (size_t pi = 0; pi < np; ++pi) r[pi].kv_share = share[pi];
          // The same repeat after a context that never showed it: what copying adds.
          for_each_variant(m, context(alt), S, full_only, v, [&](size_t, CompressedRun& run) {
            decode(run, repeat, [&](size_t k, std::span<const float> lg) {
              r[np].score += argmax(lg) == seg[k + 1];
              ++r[np].count;
            });
          });
        },
        false, 0, items ? &values : nullptr);
    if (items) {  // the baseline's column dropped: [trials x np]
      std::vector<double> kept;
      for (size_t i = 0; i < values.size(); ++i)
        if (i % (np + 1) != np) kept.push_back(values[i]);
      items->push_back(std::move(kept));
    }
    const double baseline_hits = sum[np].score, baseline_n = double(sum[np].count);
    sum.pop_back();
    out[di] = std::move(sum);
    for (TaskScore& r : out[di]) {
      r.score /= double(r.count);
      r.kv_share /= t.trials;
      r.aux = double(baseline_hits) / double(baseline_n);
    }
  }
  return out;
}

std::vector<RecallCell> run_recall(const Model& m, const Tokenizer& tok,
                                   std::span<const int32_t> stream, const RecallTask& t,
                                   const TaskVariants& v) {
  const ModelConfig& c = m.config;
  KV_CHECK(t.names.size() >= 2, "recall task: needs at least 2 names, got {}", t.names.size());
  // "CUE NAME" encoded whole for every name, so each name is tokenized as in running text
  // (a tokenizer may merge the space into the cue's last token); the cue is the tokens
  // all of them share, each candidate the rest.
  std::vector<std::vector<int32_t>> names;
  for (const std::string& name : t.names) names.push_back(tok.encode(t.cue + " " + name));
  size_t shared = names[0].size();
  for (const auto& e : names) {
    size_t k = 0;
    while (k < shared && k < e.size() && e[k] == names[0][k]) ++k;
    shared = k;
  }
  KV_CHECK(shared >= 1, "recall task: the cue '{}' shares no token across the names", t.cue);
  const std::vector<int32_t> cue(names[0].begin(), names[0].begin() + shared);
  for (size_t y = 0; y < names.size(); ++y) {
    names[y].erase(names[y].begin(), names[y].begin() + shared);
    KV_CHECK(!names[y].empty(), "recall task: name '{}' adds no token after the cue '{}'",
             t.names[y], t.cue);
  }
  size_t longest = 0;  // candidate tokens, for the decode room
  for (const auto& nm : names) longest = std::max(longest, nm.size());
  std::vector<std::vector<int32_t>> needles;
  size_t longest_needle = 0;
  for (const std::string& name : t.names) {
    needles.push_back(tok.encode(fmt::format(fmt::runtime(t.needle), name)));
    longest_needle = std::max(longest_needle, needles.back().size());
  }
  std::vector<int> lengths = t.lengths;
  if (lengths.empty()) lengths.push_back(c.default_seq_len());
  std::vector<RecallCell> out;
  for (int L : lengths) {
    if (L > c.max_seq_len || L < 1 + int(longest_needle + cue.size())) continue;
    // Every context of this length is prefilled to L - 1 tokens (the last cue token is
    // decoded), so the policies resolve once per length.
    const auto resolved = v.at(L - 1);
    for (double depth : t.depths) {
      const size_t np = v.count;
      const int64_t cell = int64_t(out.size());
      std::vector<double> values;
      // One question per (trial, name): item tr * names + x, one score per policy.
      std::vector<TaskScore> row = sum_items(
          size_t(t.trials) * names.size(), np,
          [&](size_t item, TaskScore* q) {
            const size_t x = item % names.size();
            const int tr = int(item / names.size());
            const std::vector<int32_t>& needle = needles[x];
            const int F = L - 1 - int(needle.size()) - int(cue.size());
            // Every (length, depth, trial) its own filler passage.
            const auto filler =
                slice(stream, (cell * int64_t(t.trials) + tr) * L, F, "recall task");
            const int a = int(std::lround(depth * F));
            std::vector<int32_t> s{c.bos_id};
            s.insert(s.end(), filler.begin(), filler.begin() + a);
            s.insert(s.end(), needle.begin(), needle.end());
            s.insert(s.end(), filler.begin() + a, filler.end());
            s.insert(s.end(), cue.begin(), cue.end() - 1);  // the last cue token is decoded
            const std::vector<double> share = for_each_variant(
                m, s, int(longest) + 1, resolved, v, [&](size_t pi, CompressedRun& run) {
                  std::vector<double> logp(names.size(), 0.0);
                  // Each name is decoded from the compressed prefill, by a copy of it; the
                  // logits of an input already decoded (names of one token all feed just
                  // the cue's last token) are reused: the same state gives the same logits.
                  std::map<std::vector<int32_t>, std::vector<std::vector<float>>> decoded;
                  for (size_t y = 0; y < names.size(); ++y) {
                    std::vector<int32_t> in{cue.back()};
                    in.insert(in.end(), names[y].begin(), names[y].end() - 1);
                    auto it = decoded.find(in);
                    if (it == decoded.end()) {
                      CompressedRun branch = run.branch();
                      std::vector<std::vector<float>> rows;
                      decode(branch, in, [&](size_t, std::span<const float> lg) {
                        rows.emplace_back(lg.begin(), lg.end());
                      });
                      run.absorb_peaks(branch);
                      it = decoded.emplace(in, std::move(rows)).first;
                    }
                    for (size_t k = 0; k < in.size(); ++k)
                      logp[y] -= token_nll(it->second[k], names[y][k]);
                  }
                  int rank = 1;
                  for (size_t y = 0; y < names.size(); ++y)
                    rank += y != x && (logp[y] > logp[x] || (logp[y] == logp[x] && y < x));
                  q[pi].score += rank == 1;
                  q[pi].aux += rank;
                  ++q[pi].count;
                });
            for (size_t pi = 0; pi < np; ++pi) q[pi].kv_share = share[pi];
          },
          false, 0, &values);
      for (TaskScore& r : row) {
        r.kv_share /= double(r.count);
        r.score /= double(r.count);
        r.aux /= double(r.count);
      }
      out.push_back({L, depth, row, std::move(values)});
    }
  }
  return out;
}

std::pair<int, int> passkey_ids(const PasskeyTask& t, const ModelConfig& c) {
  return {t.token_lo >= 0 ? t.token_lo : default_token_lo(c),
          t.token_hi > 0 ? t.token_hi : c.vocab_size};
}

std::vector<RecallCell> run_passkey(const Model& m, std::span<const int32_t> stream,
                                    const PasskeyTask& t, const TaskVariants& v) {
  const ModelConfig& c = m.config;
  // Plain variables, not a structured binding: the lambda below captures them, which
  // clang before 16 refuses (the fuzz build's compiler is Debian 12's clang 14).
  const auto id_range = passkey_ids(t, c);
  const int32_t lo = id_range.first, hi = id_range.second;
  KV_CHECK(t.key >= 2 && lo < hi && hi <= c.vocab_size,
           "passkey task: {} ids from [{}, {}) within a vocabulary of {}", t.key, lo, hi,
           c.vocab_size);
  std::vector<int> lengths = t.lengths;
  if (lengths.empty()) lengths.push_back(c.default_seq_len());
  std::vector<RecallCell> out;
  for (int L : lengths) {
    // [BOS] filler.. KEY ..filler [KEY minus its last id], and each distractor passkey
    // in the filler too.
    const int n_keys = 1 + t.distractors;
    const int F = L - (1 + n_keys) * t.key;
    if (L > c.max_seq_len || F < 1) continue;
    // Every context of this length is prefilled to L - key tokens.
    const auto resolved = v.at(L - t.key);
    for (size_t di = 0; di < t.depths.size(); ++di) {
      const size_t np = v.count;
      const int64_t cell = int64_t(out.size());
      std::vector<double> values;
      std::vector<TaskScore> row = sum_items(
          size_t(t.trials), np,
          [&](size_t tr, TaskScore* q) {
            // Every (length, depth, trial) its own filler passage (wrapping round the text).
            const auto filler =
                slice(stream, (cell * int64_t(t.trials) + int64_t(tr)) * L, F, "passkey task");
            // Ids the filler does not use, in order; a partial Fisher-Yates with our own index
            // arithmetic (the same passkeys on every standard library).
            std::vector<uint8_t> used(size_t(hi - lo), 0);
            for (int32_t x : filler)
              if (x >= lo && x < hi) used[size_t(x - lo)] = 1;
            std::vector<int32_t> ids;
            for (int x = lo; x < hi; ++x)
              if (!used[size_t(x - lo)] && x != c.bos_id && x != c.eos_id) ids.push_back(x);
            KV_CHECK(int(ids.size()) >= n_keys * t.key,
                     "passkey task: only {} ids of [{}, {}) are absent from a {}-token filler "
                     "passage, {} {}",
                     ids.size(), lo, hi, F,
                     n_keys == 1 ? std::string("a passkey needs")
                                 : fmt::format("{} passkeys need", n_keys),
                     n_keys * t.key);
            std::mt19937_64 rng(t.seed * 0x9e3779b97f4a7c15ull + uint64_t(L) * 1000003u +
                                uint64_t(di) * 1009u + tr);
            for (int i = 0; i < n_keys * t.key; ++i)
              std::swap(ids[size_t(i)], ids[size_t(i) + size_t(rng() % (ids.size() - size_t(i)))]);
            const std::span<const int32_t> key(ids.data(), size_t(t.key));
            // The asked passkey at the cell's depth; distractor j at depth (j + 1/2) / d.
            std::vector<std::pair<int, int>> at = {{int(std::lround(t.depths[di] * F)), 0}};
            for (int j = 0; j < t.distractors; ++j)
              at.push_back({int(std::lround((j + 0.5) / t.distractors * F)), j + 1});
            std::stable_sort(at.begin(), at.end());
            std::vector<int32_t> s{c.bos_id};
            int from = 0;
            for (const auto& [offset, k] : at) {
              s.insert(s.end(), filler.begin() + from, filler.begin() + offset);
              s.insert(s.end(), ids.begin() + ptrdiff_t(k) * t.key,
                       ids.begin() + ptrdiff_t(k + 1) * t.key);
              from = offset;
            }
            s.insert(s.end(), filler.begin() + from, filler.end());
            const std::vector<double> share =
                for_each_variant(m, s, t.key - 1, resolved, v, [&](size_t pi, CompressedRun& run) {
                  int hits = 0;
                  decode(run, key.subspan(0, size_t(t.key - 1)),
                         [&](size_t k, std::span<const float> lg) {
                           hits += argmax(lg) == key[k + 1];
                         });
                  q[pi].score += hits;
                  q[pi].aux += hits == t.key - 1;
                  q[pi].count += t.key - 1;
                });
            for (size_t pi = 0; pi < np; ++pi) q[pi].kv_share = share[pi];
          },
          false, 0, &values);
      for (TaskScore& r : row) {
        r.score /= double(r.count);
        r.aux /= double(t.trials);
        r.kv_share /= double(t.trials);
      }
      out.push_back({L, t.depths[di], row, std::move(values)});
    }
  }
  return out;
}

std::vector<TaskScore> run_policy_perplexity(const Model& m, std::span<const int32_t> stream,
                                             const PerplexityTask& t, const TaskVariants& v,
                                             std::vector<double>* items) {
  const ModelConfig& c = m.config;
  const int L = perplexity_window(t, c);
  KV_CHECK(L <= c.max_seq_len && L >= 4, "perplexity task: window {} must lie in [4, {}]", L,
           c.max_seq_len);
  const int P = perplexity_prefill(t, L);
  const std::vector<Variant> resolved = v.at(P);
  const size_t np = v.count;
  // Per window: the NLL sum (aux) and count of every policy.
  std::vector<TaskScore> out = sum_items(
      size_t(t.windows), np,
      [&](size_t w, TaskScore* q) {
        const auto chunk = slice(stream, int64_t(w) * (L - 1), L - 1, "perplexity task");
        std::vector<int32_t> s{c.bos_id};
        s.insert(s.end(), chunk.begin(), chunk.end());
        const std::span<const int32_t> all(s);
        const std::vector<double> share = for_each_variant(
            m, all.subspan(0, size_t(P)), L - P, resolved, v, [&](size_t pi, CompressedRun& run) {
              decode(run, all.subspan(size_t(P), size_t(L - 1 - P)),
                     [&](size_t k, std::span<const float> lg) {
                       q[pi].aux += token_nll(lg, s[size_t(P) + k + 1]);
                       ++q[pi].count;
                     });
            });
        for (size_t pi = 0; pi < np; ++pi) q[pi].kv_share = share[pi];
      },
      true, 0, items);
  for (TaskScore& r : out) {
    r.aux /= double(r.count);  // mean NLL
    r.score = std::exp(r.aux);
    r.kv_share /= t.windows;
  }
  return out;
}

}  // namespace kvscope
