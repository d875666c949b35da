// RazorAttention (Tang et al. 2024): retrieval heads (echo and induction heads, found by
// kv/retrieval_heads) keep every token; every other head keeps `sinks` first tokens, a
// recent window and, with `compensation`, one token standing for the dropped ones: the mean
// of their keys and values with a logit offset log(count) (the form of the authors'
// production code). While decoding, the token leaving the window joins that mean.
// At a share s of the cache (the frontier) the retrieval heads' whole caches come out of
// the total first and the other heads share the rest equally; paper B's runs size the
// window from max(s0, N / c) (cache_policy.cpp). Keys: sinks (4), compensation (true).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvscope/io/error.hpp"
#include "policies.hpp"

namespace kvscope {

void RazorPolicy::score(const LayerView& v, int g, int, std::vector<double>& out) const {
  const auto pos = v.cache->positions(v.layer, g);
  out.resize(pos.size());
  for (size_t j = 0; j < pos.size(); ++j)
    out[j] = pos[j] >= 0 && pos[j] < sinks ? sink_score(pos[j]) : double(pos[j]);
}

std::vector<HeadKeep> RazorPolicy::select(const LayerView& v, const LayerBudget& b) const {
  const KVCache& kc = *v.cache;
  std::vector<HeadKeep> out(static_cast<size_t>(kc.n_kv_heads()));
  for (int g = 0; g < kc.n_kv_heads(); ++g) {
    const auto pos = kc.positions(v.layer, g);
    const int used = int(pos.size()), B = b.per_head[size_t(g)];
    HeadKeep& k = out[size_t(g)];
    if (protected_heads[kc.head(v.layer, g)] || B == LayerBudget::kUnlimited || used <= B) {
      k.slots.resize(size_t(used));
      std::iota(k.slots.begin(), k.slots.end(), 0);
      continue;
    }
    for (int j = 0; j < used; ++j)
      if (pos[size_t(j)] >= 0 && pos[size_t(j)] < sinks) k.slots.push_back(j);
    const int n_sinks = int(k.slots.size());
    const int recent = std::max(0, B - n_sinks - (compensation ? 1 : 0));
    std::vector<int> tail;  // the latest `recent` slots that are tokens, not the merged one
    for (int j = used - 1; j >= 0 && int(tail.size()) < recent; --j)
      if (pos[size_t(j)] != KVCache::kMerged && pos[size_t(j)] >= sinks) tail.push_back(j);
    k.slots.insert(k.slots.end(), tail.rbegin(), tail.rend());
    k.merge = compensation;
    k.merge_at = n_sinks;
  }
  return out;
}

std::vector<int> RazorPolicy::head_budgets(const ModelConfig& c, double share, int n) const {
  const int heads = c.n_layers * c.n_kv_heads;
  KV_CHECK(int(protected_heads.size()) == heads, "razor: {} protected-head flags for {} KV heads",
           protected_heads.size(), heads);
  const int64_t total = int64_t(heads) * std::max(1, int(std::lround(share * n)));
  const int64_t whole = std::count(protected_heads.begin(), protected_heads.end(), 1);
  const int64_t rest = total - whole * n, others = heads - whole;
  const int least = sinks + 1 + (compensation ? 1 : 0);  // a sink, a recent token, the mean
  if (others > 0 && rest < others * least) return {};    // the retrieval heads alone exceed it
  std::vector<int> out(static_cast<size_t>(heads));
  for (int h = 0; h < heads; ++h)
    out[size_t(h)] = protected_heads[size_t(h)] ? LayerBudget::kUnlimited : int(rest / others);
  return out;
}

// Each compressed head holds its merged slot's offset (float32) and count (int32).
int64_t RazorPolicy::state_bytes(const ModelConfig&, int64_t, int) const {
  return 8 * int64_t(std::count(protected_heads.begin(), protected_heads.end(), 0));
}

std::unique_ptr<EvictionPolicy> make_razor(YamlMap& keys, const PolicyContext& ctx) {
  auto p = std::make_unique<RazorPolicy>();
  p->sinks = keys.get_at_least_or<int>("sinks", 0, p->sinks);
  p->compensation = keys.get_or<bool>("compensation", p->compensation);
  p->protected_heads = ctx.protected_heads;
  return p;
}

}  // namespace kvscope
