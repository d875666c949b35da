#include "kvscope/kv/eviction.hpp"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvscope/io/error.hpp"
#include "policies.hpp"

namespace kvscope {

namespace {

// The registry: one line per method. `kvscope run --help`-style listings and the frontier's
// key checks read it; the Python module adds methods written in Python at run time.
std::vector<EvictionMethod>& registry() {
  static std::vector<EvictionMethod> methods = {
      {"streaming", "sinks + the most recent tokens (StreamingLLM)", false, make_streaming},
      {"razor", "retrieval heads whole, others sinks + recent + compensation (RazorAttention)",
       true, make_razor},
      {"h2o", "heavy hitters by attention received so far + recent (H2O)", false, make_h2o},
      {"snapkv", "observation-window attention, max-pooled, top-k per head (SnapKV)", false,
       make_snapkv},
      {"pyramidkv", "SnapKV scores, budgets falling linearly with depth (PyramidKV)", false,
       make_pyramidkv},
      {"adakv", "SnapKV scores, the layer's budget over all heads at once (AdaKV)", false,
       make_adakv},
      {"tova", "evict the lowest attention from the current query, layer-averaged (TOVA)", false,
       make_tova},
      {"knorm", "keep the keys with the lowest L2 norm (KNorm)", false, make_knorm},
      {"random", "a random priority per token (control)", false, make_random},
  };
  return methods;
}

// The entries above: never replaced or removed. Counted on first use, which is before any
// registration (register_eviction_method asks first).
size_t builtin_count() {
  static const size_t n = registry().size();
  return n;
}

}  // namespace

const std::vector<EvictionMethod>& eviction_methods() {
  return registry();
}

void register_eviction_method(EvictionMethod m) {
  KV_CHECK(!m.name.empty() && m.name.find_first_of("+ \t\n/") == std::string::npos,
           "eviction method name '{}': expected a plain name (no '+', space or '/')", m.name);
  KV_CHECK(m.make, "eviction method '{}': no factory", m.name);
  const size_t builtin = builtin_count();
  std::vector<EvictionMethod>& r = registry();
  for (size_t i = 0; i < r.size(); ++i)
    if (r[i].name == m.name) {
      KV_CHECK(i >= builtin, "eviction method '{}' is built in; give the new method another name",
               m.name);
      r[i] = std::move(m);  // re-registering a name replaces the earlier registration
      return;
    }
  r.push_back(std::move(m));
}

bool unregister_eviction_method(const std::string& name) {
  const size_t builtin = builtin_count();
  std::vector<EvictionMethod>& r = registry();
  for (size_t i = builtin; i < r.size(); ++i)
    if (r[i].name == name) {
      r.erase(r.begin() + long(i));
      return true;
    }
  return false;
}

const EvictionMethod& eviction_method(const std::string& name, const std::string& where) {
  std::vector<std::string> names;
  for (const EvictionMethod& m : eviction_methods()) {
    if (m.name == name) return m;
    names.push_back(m.name);
  }
  throw Error(fmt::format("{}: unknown eviction method '{}' (known: {})", where, name,
                          fmt::join(names, ", ")));
}

void read_allocation(YamlMap& keys, EvictionPolicy& p) {
  const std::string a = keys.get_choice_or("allocation", {"uniform", "pyramid", "adaptive"},
                                           p.allocation == Allocation::kPyramid    ? "pyramid"
                                           : p.allocation == Allocation::kAdaptive ? "adaptive"
                                                                                   : "uniform");
  p.allocation = a == "pyramid"    ? Allocation::kPyramid
                 : a == "adaptive" ? Allocation::kAdaptive
                                   : Allocation::kUniform;
  p.beta = keys.get_or<double>("beta", p.beta);
  KV_CHECK(p.beta >= 1 && std::isfinite(p.beta), "{}: key '{}' must be a number >= 1, got {}",
           keys.file(), keys.key_path("beta"), p.beta);
  p.alpha = keys.get_or<double>("alpha", p.alpha);
  KV_CHECK(p.alpha >= 0 && p.alpha <= 1, "{}: key '{}' must lie in [0, 1], got {}", keys.file(),
           keys.key_path("alpha"), p.alpha);
}

void check_compressible(const KVCache& kc, const std::string& policy) {
  const int n = kc.length();
  // The model itself keeps only its window; comparing policies over a longer cache would
  // count bytes (and tokens) that model never holds.
  KV_CHECK(kc.window() == 0 || n <= kc.window(),
           "cache policy '{}': the model's sliding window is {} tokens but the prefill holds {}: "
           "policies on a windowed cache past its window are not implemented (use shorter "
           "sequences)",
           policy, kc.window(), n);
  for (int h = 0; h < kc.heads(); ++h)
    KV_CHECK(kc.used(size_t(h)) == n && !kc.edited(size_t(h)),
             "cache policy '{}': the cache is already compressed (head {} holds {} of {} tokens)",
             policy, h, kc.used(size_t(h)), n);
}

std::vector<int> top_slots(const std::vector<double>& scores, int k) {
  std::vector<int> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  k = std::clamp(k, 0, int(idx.size()));
  // Highest first, ties to the earlier slot (deterministic on every standard library).
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int a, int b) { return scores[size_t(a)] > scores[size_t(b)]; });
  idx.resize(size_t(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

std::vector<int> allocate_budgets(const ModelConfig& c, double share, int n, Allocation a,
                                  double beta, int protect) {
  const int L = c.n_layers, nkv = c.n_kv_heads;
  const int B = std::max(1, int(std::lround(share * n)));
  std::vector<int> per_layer(size_t(L), B);
  if (a == Allocation::kPyramid && L > 1 && B > protect) {
    const double avg = B - protect, lo = avg / beta, hi = 2 * avg - lo;
    std::vector<double> x(static_cast<size_t>(L));
    for (int l = 0; l < L; ++l) x[size_t(l)] = protect + hi - (hi - lo) * l / double(L - 1);
    // Floors, then the remainder to the largest fractional parts (ties to the lower layer),
    // so the total is exactly L * B.
    int64_t total = 0;
    for (int l = 0; l < L; ++l) total += per_layer[size_t(l)] = int(std::floor(x[size_t(l)]));
    std::vector<int> order(static_cast<size_t>(L));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int p, int q) {
      return x[size_t(p)] - per_layer[size_t(p)] > x[size_t(q)] - per_layer[size_t(q)];
    });
    for (int64_t r = int64_t(L) * B - total, i = 0; r > 0; --r, ++i)
      ++per_layer[size_t(order[size_t(i % L)])];
  }
  std::vector<int> out;
  for (int l = 0; l < L; ++l) out.insert(out.end(), size_t(nkv), per_layer[size_t(l)]);
  return out;
}

std::vector<int> EvictionPolicy::head_budgets(const ModelConfig& c, double share, int n) const {
  return allocate_budgets(c, share, n, allocation, beta, protect_window);
}

int64_t EvictionPolicy::state_bytes(const ModelConfig&, int64_t, int) const {
  return 0;
}

std::vector<HeadKeep> EvictionPolicy::select(const LayerView& v, const LayerBudget& b) const {
  const KVCache& kc = *v.cache;
  const int nkv = kc.n_kv_heads();
  std::vector<HeadKeep> out(static_cast<size_t>(nkv));
  auto all = [&](int g) {
    std::vector<int> s(static_cast<size_t>(kc.used(v.layer, g)));
    std::iota(s.begin(), s.end(), 0);
    return s;
  };
  std::vector<double> s;
  if (!b.pooled) {
    for (int g = 0; g < nkv; ++g) {
      const int B = b.per_head[size_t(g)], used = kc.used(v.layer, g);
      if (B == LayerBudget::kUnlimited || used <= B) {
        out[size_t(g)].slots = all(g);
        continue;
      }
      score(v, g, B, s);
      out[size_t(g)].slots = top_slots(s, B);
    }
    return out;
  }
  // Pooled (AdaKV): every head first keeps its `floor` best, then the layer's remaining
  // budget goes to the best of all heads' other slots (ties: earlier head, earlier slot).
  int64_t total = 0, held = 0;
  for (int g = 0; g < nkv; ++g) total += b.per_head[size_t(g)], held += kc.used(v.layer, g);
  if (held <= total) {
    for (int g = 0; g < nkv; ++g) out[size_t(g)].slots = all(g);
    return out;
  }
  struct Cand {
    double score;
    int g, slot;
  };
  std::vector<Cand> rest;
  std::vector<std::vector<uint8_t>> chosen(static_cast<size_t>(nkv));
  int64_t left = total;
  for (int g = 0; g < nkv; ++g) {
    score(v, g, b.per_head[size_t(g)], s);
    chosen[size_t(g)].assign(s.size(), 0);
    for (int j : top_slots(s, b.floor)) chosen[size_t(g)][size_t(j)] = 1, --left;
    for (size_t j = 0; j < s.size(); ++j)
      if (!chosen[size_t(g)][j]) rest.push_back({s[j], g, int(j)});
  }
  std::stable_sort(rest.begin(), rest.end(),
                   [](const Cand& p, const Cand& q) { return p.score > q.score; });
  for (size_t i = 0; i < rest.size() && left > 0; ++i, --left)
    chosen[size_t(rest[i].g)][size_t(rest[i].slot)] = 1;
  for (int g = 0; g < nkv; ++g)
    for (size_t j = 0; j < chosen[size_t(g)].size(); ++j)
      if (chosen[size_t(g)][j]) out[size_t(g)].slots.push_back(int(j));
  return out;
}

void window_attention(const LayerView& v, int g, std::vector<double>& summed) {
  const ModelConfig& c = *v.config;
  const KVCache& kc = *v.cache;
  const int hd = kc.head_dim(), used = kc.used(v.layer, g), group = c.group_size();
  const float* K = kc.k_head(v.layer, g);
  const float* bias = kc.bias_head(v.layer, g);
  const auto pos = kc.positions(v.layer, g);
  const float scale = c.query_scale(), cap = c.attn_softcap;
  KV_CHECK(v.window_q && v.n_window > 0, "window_attention: layer {} has no window queries",
           v.layer);
  summed.assign(size_t(used), 0.0);
  std::vector<double> row(static_cast<size_t>(used));
  for (int h = g * group; h < (g + 1) * group; ++h)
    for (int i = 0; i < v.n_window; ++i) {
      const float* q = v.window_q + (size_t(h) * v.window_stride + size_t(i)) * hd;
      const int32_t pq = kc.length() - v.n_window + i;
      double mx = -INFINITY;
      for (int j = 0; j < used; ++j) {
        if (pos[size_t(j)] != KVCache::kMerged && pos[size_t(j)] > pq) {
          row[size_t(j)] = -INFINITY;  // a later token: causal
          continue;
        }
        double x = 0.0;
        for (int d = 0; d < hd; ++d) x += double(q[d]) * K[size_t(j) * hd + d];
        x *= scale;
        if (cap > 0.0f) x = cap * std::tanh(x / cap);  // Gemma 2, as the forward pass
        if (bias) x += bias[j];
        row[size_t(j)] = x;
        mx = std::max(mx, x);
      }
      double z = 0.0;
      for (int j = 0; j < used; ++j)
        z += row[size_t(j)] == -INFINITY ? 0.0 : std::exp(row[size_t(j)] - mx);
      for (int j = 0; j < used; ++j)
        if (row[size_t(j)] != -INFINITY) summed[size_t(j)] += std::exp(row[size_t(j)] - mx) / z;
    }
}

}  // namespace kvscope
