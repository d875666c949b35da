#include "kvscope/kv/cache_policy.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "kvscope/io/error.hpp"

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

void apply_policy(KVCache& cache, const CachePolicy& p,
                  const std::vector<std::vector<double>>* attention_mass) {
  const int n = cache.length, hd = cache.head_dim;
  KV_CHECK(p.n_sink >= 0 && p.window >= 0 && p.s0 >= 0 && p.c > 0,
           "cache policy '{}': sink, window, s0 must be >= 0 and c > 0", p.name);
  // The model itself keeps only its window; comparing policies over a longer cache would
  // count bytes (and tokens) that model never holds.
  KV_CHECK(cache.window == 0 || n <= cache.window,
           "cache policy '{}': the model's sliding window is {} tokens but the prefill holds {}: "
           "policies on a windowed cache past its window are not implemented (use shorter "
           "sequences)",
           p.name, cache.window, n);
  for (size_t i = 0; i < cache.used.size(); ++i)
    KV_CHECK(cache.used[i] == n && !cache.biased[i] && !cache.edited[i],
             "cache policy '{}': the cache is already compressed (head {} holds {} of {} tokens)",
             p.name, i, cache.used[i], n);
  if (p.kind == PolicyKind::kFull) return;
  if (p.kind == PolicyKind::kRazor)
    KV_CHECK(p.protected_heads.size() == cache.used.size(),
             "cache policy '{}': {} protected-head flags for {} KV heads", p.name,
             p.protected_heads.size(), cache.used.size());
  if (p.kind == PolicyKind::kH2O) {
    KV_CHECK(attention_mass && attention_mass->size() == cache.used.size(),
             "cache policy '{}': h2o needs the prefill's attention mass per KV head", p.name);
    KV_CHECK(p.budget > p.n_sink, "cache policy '{}': budget {} must exceed the {} sinks", p.name,
             p.budget, p.n_sink);
  }
  std::vector<int> kept;
  for (int l = 0; l < cache.n_layers; ++l)
    for (int g = 0; g < cache.n_kv_heads; ++g) {
      const size_t h = cache.head(l, g);
      const bool is_protected = p.kind == PolicyKind::kRazor && p.protected_heads[h];
      if (kept_slots(p, n, is_protected) >= n) continue;
      // Which positions stay, ascending.
      const int sinks = std::min(p.n_sink, n);
      kept.clear();
      for (int j = 0; j < sinks; ++j) kept.push_back(j);
      int recent = 0;
      if (p.kind == PolicyKind::kStreaming) recent = p.window;
      if (p.kind == PolicyKind::kRazor) recent = razor_recent(p, n);
      if (p.kind == PolicyKind::kH2O) {
        recent = (p.budget - sinks) / 2;
        const int heavy = p.budget - sinks - recent;
        const std::vector<double>& mass = (*attention_mass)[h];
        std::vector<int> middle(size_t(std::max(0, n - recent - sinks)));
        std::iota(middle.begin(), middle.end(), sinks);
        // Most attention first; ties to the earlier position (deterministic).
        std::stable_sort(middle.begin(), middle.end(),
                         [&](int a, int b) { return mass[size_t(a)] > mass[size_t(b)]; });
        middle.resize(std::min(middle.size(), size_t(heavy)));
        std::sort(middle.begin(), middle.end());
        kept.insert(kept.end(), middle.begin(), middle.end());
      }
      recent = std::min(recent, n - sinks);
      for (int j = n - recent; j < n; ++j) kept.push_back(j);
      float* K = cache.k_head(l, g);
      float* V = cache.v_head(l, g);
      float* B = cache.bias_head(l, g);
      // The compensation token: mean K and V of the dropped positions, worth N_d tokens.
      const bool comp = p.kind == PolicyKind::kRazor && p.compensation;
      std::vector<double> kmean(size_t(hd), 0.0), vmean(size_t(hd), 0.0);
      int dropped = 0;
      if (comp) {
        size_t ki = 0;
        for (int j = 0; j < n; ++j) {
          if (ki < kept.size() && kept[ki] == j) {
            ++ki;
            continue;
          }
          for (int d = 0; d < hd; ++d) {
            kmean[size_t(d)] += K[size_t(j) * hd + d];
            vmean[size_t(d)] += V[size_t(j) * hd + d];
          }
          ++dropped;
        }
      }
      // Compact in place: kept positions are ascending and each moves to a slot no later
      // than its own (the compensation slot, after the sinks, has a dropped slot's room).
      int out = 0;
      for (size_t i = 0; i < kept.size(); ++i) {
        if (comp && dropped > 0 && out == sinks) {  // the compensation slot
          for (int d = 0; d < hd; ++d) {
            K[size_t(out) * hd + d] = float(kmean[size_t(d)] / dropped);
            V[size_t(out) * hd + d] = float(vmean[size_t(d)] / dropped);
          }
          B[out] = float(std::log(double(dropped)));
          cache.biased[h] = 1;
          ++out;
        }
        const int j = kept[i];
        if (j != out) {
          std::memmove(K + size_t(out) * hd, K + size_t(j) * hd, sizeof(float) * size_t(hd));
          std::memmove(V + size_t(out) * hd, V + size_t(j) * hd, sizeof(float) * size_t(hd));
        }
        B[out] = 0.0f;
        ++out;
      }
      // Slots past the kept ones will hold decoded tokens: no offset (a reused state may
      // hold a stale one there).
      std::fill(B + out, B + cache.capacity, 0.0f);
      cache.used[h] = out;
      cache.edited[h] = 1;
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
