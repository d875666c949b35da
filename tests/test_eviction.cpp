// Every eviction method's kept positions against a naive implementation written here from
// its paper's definition (positions, not slots; attention recomputed in double from the
// logged queries and the cached keys), at the end of prefill and after every decoding
// step, on an MHA and a GQA model with random weights. The naive run applies its own
// decisions to its own cache, so the two runs stay the same only while every decision
// agrees.
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "kvscope/kv/compressed_run.hpp"
#include "kvscope/kv/eviction.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Matchers::Contains;

namespace {

const Model& model(bool gqa) {
  static test::TempDir dir("eviction_models");
  static std::map<bool, Model> models;
  if (!models.count(gqa)) {
    SyntheticSpec s;
    ModelConfig& c = s.config;
    c.dim = 32, c.hidden_dim = 64, c.n_layers = 3, c.n_heads = 4, c.head_dim = 8;
    c.n_kv_heads = gqa ? 2 : 4, c.vocab_size = 64, c.max_seq_len = 128;
    s.seed = gqa ? 7 : 3;
    const auto path = dir.path / (gqa ? "gqa" : "mha");
    write_synthetic_hf_model(path, s);
    models.emplace(gqa, load_model(path));
  }
  return models.at(gqa);
}

std::vector<int32_t> tokens(int n, uint32_t seed) {
  return test::random_tokens(n, seed);
}

std::unique_ptr<EvictionPolicy> make(const std::string& method, const std::string& yaml,
                                     std::vector<uint8_t> protected_heads = {}) {
  YamlMap keys(parse_yaml_string(yaml, "test"), "test");
  PolicyContext ctx{std::move(protected_heads)};
  auto p = eviction_method(method, "test").make(keys, ctx);
  keys.finish();
  return p;
}

// Every query of every layer and head, by position: q[layer][head][position * hd + d].
struct QueryLog : ForwardObserver {
  std::vector<std::vector<std::vector<float>>> q;
  void on_layer(const LayerCapture& c) override {
    if (q.size() <= size_t(c.layer)) q.resize(size_t(c.layer) + 1);
    auto& heads = q[size_t(c.layer)];
    heads.resize(size_t(c.n_heads));
    for (int h = 0; h < c.n_heads; ++h)
      heads[size_t(h)].insert(heads[size_t(h)].end(), c.q + size_t(h) * c.n_tokens * c.head_dim,
                              c.q + size_t(h + 1) * c.n_tokens * c.head_dim);
  }
};

// What the naive methods see: the cache (positions and keys per head) and the log.
struct Naive {
  const Model& m;
  RunState st;
  QueryLog log;
  // mass[layer * n_kv + g][position]: attention received, summed over queries and the
  // group's query heads (H2O), updated as each query runs.
  std::vector<std::map<int32_t, double>> mass;
  std::map<int32_t, std::vector<float>> keys;  // [layer * n_kv + g] flattened: see key_of
  Naive(const Model& model, int cap) : m(model), st(model.config, cap) {
    st.cache.set_trim_windows(false);
    mass.resize(size_t(m.config.n_layers) * m.config.n_kv_heads);
  }

  // Softmax of query (layer l, head h) at position pq over head g's cached positions <= pq.
  std::map<int32_t, double> attention(int l, int h, int32_t pq) const {
    const ModelConfig& c = m.config;
    const int g = h / c.group_size(), hd = c.head_dim;
    const float* q = log.q[size_t(l)][size_t(h)].data() + size_t(pq) * hd;
    const auto pos = st.cache.positions(l, g);
    std::map<int32_t, double> logit;
    for (size_t j = 0; j < pos.size(); ++j) {
      if (pos[j] > pq) continue;
      double s = 0;
      for (int d = 0; d < hd; ++d) s += double(q[d]) * st.cache.k_head(l, g)[j * hd + size_t(d)];
      logit[pos[j]] = s / std::sqrt(double(hd));
    }
    double mx = -1e300, z = 0;
    for (auto& [p, s] : logit) mx = std::max(mx, s);
    for (auto& [p, s] : logit) z += std::exp(s - mx);
    for (auto& [p, s] : logit) s = std::exp(s - mx) / z;
    return logit;
  }

  void run(std::span<const int32_t> t) {
    const int32_t first = st.cache.length();
    ForwardOptions o;
    o.observer = &log;
    o.logits = LogitsMode::kLast;
    forward(m, st, t, o);
    const ModelConfig& c = m.config;
    for (int l = 0; l < c.n_layers; ++l)
      for (int h = 0; h < c.n_heads; ++h)
        for (int32_t pq = first; pq < st.cache.length(); ++pq)
          for (auto& [p, w] : attention(l, h, pq))
            mass[size_t(l) * c.n_kv_heads + size_t(h / c.group_size())][p] += w;
  }

  std::vector<int32_t> positions(int l, int g) const {
    const auto p = st.cache.positions(l, g);
    return {p.begin(), p.end()};
  }

  // Keeps the given positions of head (l, g).
  void keep(int l, int g, const std::vector<int32_t>& kept, bool merge = false, int at = 0) {
    const auto pos = positions(l, g);
    std::vector<int> slots;
    for (size_t j = 0; j < pos.size(); ++j)
      if (std::find(kept.begin(), kept.end(), pos[j]) != kept.end()) slots.push_back(int(j));
    REQUIRE(slots.size() == kept.size());
    st.cache.keep(l, g, slots, merge, at);
  }
};

// The positions with the k highest scores (ties: earlier position), ascending.
std::vector<int32_t> top(const std::map<int32_t, double>& score, int k) {
  std::vector<std::pair<int32_t, double>> v(score.begin(), score.end());
  std::stable_sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second > b.second; });
  std::vector<int32_t> out;
  for (int i = 0; i < k && i < int(v.size()); ++i) out.push_back(v[size_t(i)].first);
  std::sort(out.begin(), out.end());
  return out;
}

// The naive SnapKV score of head g: the last w queries' attention summed over them and the
// group's heads, max-pooled (kernel) over the positions before the window, in order.
std::map<int32_t, double> snap_scores(const Naive& n, int l, int g, int w, int kernel) {
  const ModelConfig& c = n.m.config;
  const int32_t len = n.st.cache.length();
  std::map<int32_t, double> sum;
  for (int h = g * c.group_size(); h < (g + 1) * c.group_size(); ++h)
    for (int32_t pq = std::max(0, len - w); pq < len; ++pq)
      for (auto& [p, x] : n.attention(l, h, pq)) sum[p] += x;
  std::vector<int32_t> before;
  for (int32_t p : n.positions(l, g))
    if (p < len - w) before.push_back(p);
  std::map<int32_t, double> out;
  const int r = kernel / 2, m = int(before.size());
  for (int i = 0; i < m; ++i) {
    double best = -1;
    for (int j = std::max(0, i - r); j <= std::min(m - 1, i + r); ++j)
      best = std::max(best, sum[before[size_t(j)]]);
    out[before[size_t(i)]] = best;
  }
  return out;
}

using NaiveEvict = std::function<void(Naive&, int budget)>;

// Runs the library and the naive implementation side by side: prefill P tokens, compress
// to share, decode D tokens keeping the budget; the positions of every head must agree
// after the prefill and after every step.
void compare(bool gqa, const std::string& method, const std::string& yaml, double share,
             const NaiveEvict& naive, std::vector<uint8_t> prot = {}) {
  const Model& m = model(gqa);
  const ModelConfig& c = m.config;
  const int P = 48, D = 12;
  const auto toks = tokens(P + D, gqa ? 11 : 12);
  const std::shared_ptr<const EvictionPolicy> policy = make(method, yaml, prot);
  CompressedRun lib(m, P + D, policy->needs());
  lib.prefill(std::span<const int32_t>(toks).subspan(0, P));
  Variant v;
  v.name = method, v.policy = policy, v.share = share, v.during_decoding = true;
  REQUIRE(lib.compress(v, 5));
  Naive nv(m, P + D);
  nv.run(std::span<const int32_t>(toks).subspan(0, P));
  const int B = int(std::lround(share * P));
  naive(nv, B);
  for (int step = 0; step <= D; ++step) {
    if (step > 0) {
      lib.step(toks[size_t(P + step - 1)]);
      nv.run(std::span<const int32_t>(toks).subspan(size_t(P + step - 1), 1));
      naive(nv, B);
    }
    for (int l = 0; l < c.n_layers; ++l)
      for (int g = 0; g < c.n_kv_heads; ++g) {
        INFO(method << " " << (gqa ? "GQA" : "MHA") << " step " << step << " layer " << l
                    << " head " << g);
        const auto got = lib.state().cache.positions(l, g);
        CHECK(std::vector<int32_t>(got.begin(), got.end()) == nv.positions(l, g));
      }
  }
}

}  // namespace

TEST_CASE("streaming keeps the sinks and the latest tokens at every step", "[eviction]") {
  for (bool gqa : {false, true})
    compare(gqa, "streaming", "{sinks: 3}", 0.25, [](Naive& n, int B) {
      const ModelConfig& c = n.m.config;
      const int32_t len = n.st.cache.length();
      std::vector<int32_t> kept = {0, 1, 2};
      for (int32_t p = len - (B - 3); p < len; ++p) kept.push_back(p);
      for (int l = 0; l < c.n_layers; ++l)
        for (int g = 0; g < c.n_kv_heads; ++g)
          if (int(n.positions(l, g).size()) > B) n.keep(l, g, kept);
    });
}

TEST_CASE("h2o keeps the recent half and the most attended tokens at every step", "[eviction]") {
  for (bool gqa : {false, true})
    compare(gqa, "h2o", "{}", 0.25, [](Naive& n, int B) {
      const ModelConfig& c = n.m.config;
      for (int l = 0; l < c.n_layers; ++l)
        for (int g = 0; g < c.n_kv_heads; ++g) {
          const auto pos = n.positions(l, g);
          if (int(pos.size()) <= B) continue;
          const int recent = B / 2;
          std::map<int32_t, double> heavy;
          for (size_t j = 0; j + size_t(recent) < pos.size(); ++j)
            heavy[pos[j]] = n.mass[size_t(l) * c.n_kv_heads + size_t(g)][pos[j]];
          std::vector<int32_t> kept = top(heavy, B - recent);
          kept.insert(kept.end(), pos.end() - recent, pos.end());
          n.keep(l, g, kept);
        }
    });
}

TEST_CASE("snapkv keeps the window and the top pooled window attention per head", "[eviction]") {
  for (bool gqa : {false, true})
    compare(gqa, "snapkv", "{window: 6, kernel: 3}", 0.3, [](Naive& n, int B) {
      const ModelConfig& c = n.m.config;
      const int32_t len = n.st.cache.length();
      for (int l = 0; l < c.n_layers; ++l)
        for (int g = 0; g < c.n_kv_heads; ++g) {
          if (int(n.positions(l, g).size()) <= B) continue;
          std::vector<int32_t> kept = top(snap_scores(n, l, g, 6, 3), B - 6);
          for (int32_t p = len - 6; p < len; ++p) kept.push_back(p);
          n.keep(l, g, kept);
        }
    });
}

TEST_CASE("pyramidkv gives snapkv's choice a budget that falls with depth", "[eviction]") {
  // Budget by hand: round(0.3 * 48) = 14 per head; the window of 4 stays in every layer and
  // the other 10 go pyramid-wise with beta 2: lo = 5, hi = 15, so layers 0-2 keep 19, 14
  // and 9 slots per head (19 + 14 + 9 = 3 * 14).
  for (bool gqa : {false, true})
    compare(gqa, "pyramidkv", "{window: 4, kernel: 3, beta: 2}", 0.3, [](Naive& n, int) {
      const ModelConfig& c = n.m.config;
      const int32_t len = n.st.cache.length();
      const int budget[3] = {19, 14, 9};
      for (int l = 0; l < c.n_layers; ++l)
        for (int g = 0; g < c.n_kv_heads; ++g) {
          if (int(n.positions(l, g).size()) <= budget[l]) continue;
          std::vector<int32_t> kept = top(snap_scores(n, l, g, 4, 3), budget[l] - 4);
          for (int32_t p = len - 4; p < len; ++p) kept.push_back(p);
          n.keep(l, g, kept);
        }
    });
}

TEST_CASE("adakv chooses a layer's budget over all heads' snapkv scores with a floor",
          "[eviction]") {
  for (bool gqa : {false, true})
    compare(gqa, "adakv", "{window: 4, kernel: 3, alpha: 0.8}", 0.25, [](Naive& n, int B) {
      const ModelConfig& c = n.m.config;
      const int32_t len = n.st.cache.length();
      const int floor = int(0.8 * B);  // alpha * B
      for (int l = 0; l < c.n_layers; ++l) {
        int held = 0;
        for (int g = 0; g < c.n_kv_heads; ++g) held += int(n.positions(l, g).size());
        if (held <= B * c.n_kv_heads) continue;
        // Window positions first (they must stay), then each head's floor, then the best
        // of the rest over every head; ties go to the earlier head and position.
        std::vector<std::map<int32_t, double>> s(static_cast<size_t>(c.n_kv_heads));
        std::vector<std::vector<int32_t>> kept(static_cast<size_t>(c.n_kv_heads));
        struct C {
          double s;
          int g;
          int32_t p;
        };
        std::vector<C> rest;
        int left = B * c.n_kv_heads;
        for (int g = 0; g < c.n_kv_heads; ++g) {
          s[size_t(g)] = snap_scores(n, l, g, 4, 3);
          for (int32_t p = len - 4; p < len; ++p) s[size_t(g)][p] = 1e15 + p;
          kept[size_t(g)] = top(s[size_t(g)], floor);
          left -= int(kept[size_t(g)].size());
          for (auto& [p, x] : s[size_t(g)])
            if (!std::binary_search(kept[size_t(g)].begin(), kept[size_t(g)].end(), p))
              rest.push_back({x, g, p});
        }
        std::stable_sort(rest.begin(), rest.end(), [](auto& a, auto& b) { return a.s > b.s; });
        for (size_t i = 0; i < rest.size() && left > 0; ++i, --left)
          kept[size_t(rest[i].g)].push_back(rest[i].p);
        for (int g = 0; g < c.n_kv_heads; ++g) {
          std::sort(kept[size_t(g)].begin(), kept[size_t(g)].end());
          if (kept[size_t(g)].size() < n.positions(l, g).size()) n.keep(l, g, kept[size_t(g)]);
        }
      }
    });
}

TEST_CASE("tova drops the lowest layer-averaged attention of the current query", "[eviction]") {
  for (bool gqa : {false, true})
    compare(gqa, "tova", "{}", 0.25, [](Naive& n, int B) {
      const ModelConfig& c = n.m.config;
      const int32_t last = n.st.cache.length() - 1;
      for (int l = 0; l < c.n_layers; ++l) {
        if (int(n.positions(l, 0).size()) <= B) continue;
        std::map<int32_t, double> avg;
        for (int h = 0; h < c.n_heads; ++h)
          for (auto& [p, w] : n.attention(l, h, last)) avg[p] += w / c.n_heads;
        const std::vector<int32_t> kept = top(avg, B);
        for (int g = 0; g < c.n_kv_heads; ++g) n.keep(l, g, kept);
      }
    });
}

TEST_CASE("knorm keeps the keys of lowest L2 norm", "[eviction]") {
  for (bool gqa : {false, true})
    compare(gqa, "knorm", "{}", 0.25, [](Naive& n, int B) {
      const ModelConfig& c = n.m.config;
      for (int l = 0; l < c.n_layers; ++l)
        for (int g = 0; g < c.n_kv_heads; ++g) {
          const auto pos = n.positions(l, g);
          if (int(pos.size()) <= B) continue;
          std::map<int32_t, double> s;
          for (size_t j = 0; j < pos.size(); ++j) {
            double sq = 0;
            for (int d = 0; d < c.head_dim; ++d) {
              const double x = n.st.cache.k_head(l, g)[j * size_t(c.head_dim) + size_t(d)];
              sq += x * x;
            }
            s[pos[j]] = -std::sqrt(sq);
          }
          n.keep(l, g, top(s, B));
        }
    });
}

TEST_CASE("razor keeps retrieval heads whole and folds the rest into one mean token",
          "[eviction]") {
  for (bool gqa : {false, true}) {
    const ModelConfig& c = model(gqa).config;
    const int heads = c.n_layers * c.n_kv_heads;
    std::vector<uint8_t> prot(size_t(heads), 0);
    prot[1] = prot[size_t(heads - 1)] = 1;
    // Budget by hand: every head's share of 48 * 0.5 = 24 slots; the two retrieval heads
    // hold all 48, so the others split heads * 24 - 2 * 48.
    const int others = (heads * 24 - 2 * 48) / (heads - 2);
    // The keys of every token as appended, to check the merged slot against.
    std::map<std::pair<int, int32_t>, std::vector<float>> orig;
    compare(
        gqa, "razor", "{sinks: 2}", 0.5,
        [&](Naive& n, int) {
          for (int l = 0; l < c.n_layers; ++l)
            for (int g = 0; g < c.n_kv_heads; ++g) {
              const int h = l * c.n_kv_heads + g;
              const auto pos = n.positions(l, g);
              for (size_t j = 0; j < pos.size(); ++j)
                if (pos[j] >= 0 && !orig.count({h, pos[j]}))
                  orig[{h, pos[j]}] =
                      std::vector<float>(n.st.cache.k_head(l, g) + j * c.head_dim,
                                         n.st.cache.k_head(l, g) + (j + 1) * size_t(c.head_dim));
              if (prot[size_t(h)] || int(pos.size()) <= others) continue;
              std::vector<int32_t> kept = {0, 1};
              const int32_t len = n.st.cache.length();
              for (int32_t p = len - (others - 3); p < len; ++p) kept.push_back(p);
              n.keep(l, g, kept, true, 2);
              // The merged slot (index 2): the mean of every dropped token's key so far.
              std::vector<double> mean(size_t(c.head_dim), 0.0);
              int count = 0;
              for (int32_t p = 2; p < len - (others - 3); ++p, ++count)
                for (int d = 0; d < c.head_dim; ++d) mean[size_t(d)] += orig[{h, p}][size_t(d)];
              REQUIRE(n.st.cache.positions(l, g)[2] == KVCache::kMerged);
              CHECK(n.st.cache.merged_count(l, g) == count);
              for (int d = 0; d < c.head_dim; ++d)  // float sums: 1e-5 absolute
                CHECK(n.st.cache.k_head(l, g)[2 * c.head_dim + d] ==
                      Approx(mean[size_t(d)] / count).margin(1e-5));
              CHECK(n.st.cache.bias_head(l, g)[2] == Approx(std::log(double(count))).epsilon(1e-6));
            }
        },
        prot);
  }
}

TEST_CASE("random keeps the budget and the same tokens for the same seed", "[eviction]") {
  const Model& m = model(true);
  const auto toks = tokens(40, 3);
  auto run = [&](uint64_t seed) {
    CompressedRun r(m, 41, {});
    r.prefill(toks);
    Variant v;
    v.policy = make("random", "{}"), v.share = 0.25;
    REQUIRE(r.compress(v, seed));
    const auto p = r.state().cache.positions(1, 1);
    return std::vector<int32_t>(p.begin(), p.end());
  };
  CHECK(run(1) == run(1));
  CHECK(run(1) != run(2));
  CHECK(run(1).size() == 10);
}

TEST_CASE("pyramid budgets fall linearly with depth and keep the total (by hand)", "[eviction]") {
  ModelConfig c;
  c.n_layers = 4, c.n_kv_heads = 2;
  // share 0.25 of 40 tokens: 10 per head. beta 2, no window: lo = 5, hi = 15, layers
  // 15, 11.67, 8.33, 5 -> floors 15, 11, 8, 5 (39), the remaining slot to layer 1's .67.
  const std::vector<int> b = allocate_budgets(c, 0.25, 40, Allocation::kPyramid, 2.0, 0);
  CHECK(b == std::vector<int>{15, 15, 12, 12, 8, 8, 5, 5});
  // A window of 4 stays with every layer (beta 20): the other 6 go lo = 0.3, hi = 11.7,
  // so 15.7, 11.9, 8.1, 4.3 -> floors 15, 11, 8, 4 (38), the remaining 2 to the largest
  // remainders (layer 1's .9, layer 0's .7).
  const std::vector<int> w = allocate_budgets(c, 0.25, 40, Allocation::kPyramid, 20.0, 4);
  CHECK(w == std::vector<int>{16, 16, 12, 12, 8, 8, 4, 4});
  // Uniform and adaptive: the same budget everywhere.
  CHECK(allocate_budgets(c, 0.25, 40, Allocation::kUniform, 20.0, 4) == std::vector<int>(8, 10));
}

TEST_CASE("a razor share below what the retrieval heads hold is out of reach", "[eviction]") {
  const Model& m = model(false);
  const int heads = m.config.n_layers * m.config.n_kv_heads;
  CompressedRun r(m, 41, {});
  r.prefill(tokens(40, 5));
  Variant v;
  // 3 of 12 heads whole hold 120 slots; 1/8 of 12 * 40 is 60.
  std::vector<uint8_t> prot(size_t(heads), 0);
  prot[0] = prot[1] = prot[2] = 1;
  v.policy = make("razor", "{}", prot), v.share = 0.125;
  CHECK_FALSE(r.compress(v, 1));
  CHECK(r.state().cache.slots_in_use() == int64_t(heads) * 40);
}

TEST_CASE("eviction methods name unknown methods and bad keys", "[eviction]") {
  CHECK_THROWS_WITH(make("snapkv2", "{}"),
                    Contains("unknown eviction method 'snapkv2'") && Contains("snapkv, pyramidkv"));
  CHECK_THROWS_WITH(make("snapkv", "{kernel: 4}"), Contains("kernel") && Contains("odd"));
  CHECK_THROWS_WITH(make("snapkv", "{windw: 4}"), Contains("windw"));
  CHECK_THROWS_WITH(make("tova", "{allocation: adaptive}"), Contains("adaptive"));
  CHECK_THROWS_WITH(make("h2o", "{allocation: pyramidal}"), Contains("pyramidal"));
}
