#include "kvscope/kv/cache_policy.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "kvscope/io/error.hpp"
#include "policies.hpp"

namespace kvscope {

namespace {

int razor_recent(const CachePolicy& p, int n) {
  return std::max(p.s0, int(std::floor(double(n) / p.c)));
}

}  // namespace

int kept_slots(const CachePolicy& p, int n, bool is_protected) {
  switch (p.kind) {
    case PolicyKind::kFull:
      return n;
    case PolicyKind::kStreaming:
      return std::min(n, p.n_sink + p.window);
    case PolicyKind::kH2O:
      return std::min(n, p.budget);
    case PolicyKind::kRazor: {
      if (is_protected) return n;
      const int keep = p.n_sink + razor_recent(p, n);
      return keep >= n ? n : keep + (p.compensation ? 1 : 0);
    }
  }
  return n;
}

Variant paper_b_variant(const CachePolicy& p, int n_layers, int n_kv_heads, int n) {
  Variant v;
  v.name = p.name;
  if (p.kind == PolicyKind::kFull) return v;
  const int heads = n_layers * n_kv_heads;
  if (p.kind == PolicyKind::kRazor)
    KV_CHECK(int(p.protected_heads.size()) == heads,
             "cache policy '{}': {} protected-head flags for {} KV heads", p.name,
             p.protected_heads.size(), heads);
  if (p.kind == PolicyKind::kStreaming) {
    auto s = std::make_shared<StreamingPolicy>();
    s->sinks = p.n_sink;
    v.policy = s;
  } else if (p.kind == PolicyKind::kH2O) {
    auto h = std::make_shared<H2OPolicy>();
    h->sinks = p.n_sink;
    h->recent_share = 0.5;  // the budget after the sinks, half recent, half heavy
    v.policy = h;
  } else {
    auto r = std::make_shared<RazorPolicy>();
    r->sinks = p.n_sink;
    r->compensation = p.compensation;
    r->protected_heads = p.protected_heads;
    v.policy = r;
  }
  for (int h = 0; h < heads; ++h)
    v.budgets.push_back(
        kept_slots(p, n, p.kind == PolicyKind::kRazor && p.protected_heads[size_t(h)]));
  return v;
}

void apply_policy(KVCache& cache, const CachePolicy& p,
                  const std::vector<std::vector<double>>* attention_mass) {
  const int n = cache.length();
  KV_CHECK(p.n_sink >= 0 && p.window >= 0 && p.s0 >= 0 && p.c > 0,
           "cache policy '{}': sink, window, s0 must be >= 0 and c > 0", p.name);
  check_compressible(cache, p.name);
  if (p.kind == PolicyKind::kFull) return;
  if (p.kind == PolicyKind::kH2O) {
    KV_CHECK(attention_mass && int(attention_mass->size()) == cache.heads(),
             "cache policy '{}': h2o needs the prefill's attention mass per KV head", p.name);
    KV_CHECK(p.budget > p.n_sink, "cache policy '{}': budget {} must exceed the {} sinks", p.name,
             p.budget, p.n_sink);
  }
  const Variant v = paper_b_variant(p, cache.n_layers(), cache.n_kv_heads(), n);
  const int nkv = cache.n_kv_heads();
  std::vector<std::vector<double>> mass;
  for (int l = 0; l < cache.n_layers(); ++l) {
    LayerView view;
    view.cache = &cache;
    view.layer = l;
    if (attention_mass) {
      mass.assign(attention_mass->begin() + ptrdiff_t(l) * nkv,
                  attention_mass->begin() + ptrdiff_t(l + 1) * nkv);
      view.mass = &mass;
    }
    LayerBudget b;
    b.per_head.assign(v.budgets.begin() + ptrdiff_t(l) * nkv,
                      v.budgets.begin() + ptrdiff_t(l + 1) * nkv);
    const std::vector<HeadKeep> sel = v.policy->select(view, b);
    for (int g = 0; g < nkv; ++g) {
      const HeadKeep& k = sel[size_t(g)];
      if (int(k.slots.size()) < n || k.merge) cache.keep(l, g, k.slots, k.merge, k.merge_at);
    }
  }
}

AttentionMass::AttentionMass(const ModelConfig& c, int tokens)
    : n_layers_(c.n_layers),
      n_heads_(c.n_heads),
      n_kv_(c.n_kv_heads),
      tokens_(tokens),
      per_q_(size_t(c.n_layers) * c.n_heads, std::vector<double>(size_t(tokens), 0.0)) {}

void AttentionMass::on_attention(const AttentionRows& r) {
  std::vector<double>& acc = per_q_[size_t(r.layer) * n_heads_ + size_t(r.head)];
  const int n = std::min(r.n_keys, tokens_);
  for (int i = 0; i < r.n_q; ++i)
    for (int j = 0; j < n; ++j) acc[size_t(j)] += r.weights[size_t(i) * r.n_keys + j];
}

std::vector<std::vector<double>> AttentionMass::per_kv_head() const {
  std::vector<std::vector<double>> out(size_t(n_layers_) * n_kv_,
                                       std::vector<double>(size_t(tokens_), 0.0));
  const int group = n_heads_ / n_kv_;
  for (int l = 0; l < n_layers_; ++l)
    for (int h = 0; h < n_heads_; ++h) {
      const auto& src = per_q_[size_t(l) * n_heads_ + size_t(h)];
      auto& dst = out[size_t(l) * n_kv_ + size_t(h / group)];
      for (int j = 0; j < tokens_; ++j) dst[size_t(j)] += src[size_t(j)];
    }
  return out;
}

}  // namespace kvscope
