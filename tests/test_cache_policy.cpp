// Cache policies on the shipped stories260K model: which slots each head keeps, the bytes
// reported, the compensation token against the attention it replaces, and the policies
// that must reproduce the full cache exactly.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "kvscope/kv/cache_policy.hpp"
#include "kvscope/runtime/forward.hpp"
#include "test_util.hpp"

using namespace kvscope;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

std::vector<int32_t> tokens(const ModelConfig& c, int T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t{c.bos_id};
  while (int(t.size()) < T) t.push_back(3 + int32_t(rng() % uint32_t(c.vocab_size - 3)));
  return t;
}

const Model& model() {
  static const Model m = load_model(test::stories260k());
  return m;
}

// Prefills `prompt`, applies `p`, decodes `next`; returns the logits of every decoded token.
std::vector<float> run(const CachePolicy& p, const std::vector<int32_t>& prompt,
                       const std::vector<int32_t>& next, RunState* keep = nullptr,
                       void (*edit)(KVCache&) = nullptr) {
  const Model& m = model();
  RunState st(m.config, int(prompt.size() + next.size()));
  AttentionMass mass(m.config, int(prompt.size()));
  ForwardOptions o;
  o.logits = LogitsMode::kNone;
  if (p.kind == PolicyKind::kH2O) o.observer = &mass;
  forward(m, st, prompt, o);
  if (edit) edit(st.cache);
  const auto masses = mass.per_kv_head();
  apply_policy(st.cache, p, p.kind == PolicyKind::kH2O ? &masses : nullptr);
  std::vector<float> out;
  for (int32_t t : next) {
    const auto lg = forward(m, st, std::span<const int32_t>(&t, 1), {LogitsMode::kLast});
    out.insert(out.end(), lg.begin(), lg.end());
  }
  if (keep) *keep = st;
  return out;
}

CachePolicy razor(int sink, int s0, double c, bool comp, std::vector<uint8_t> prot) {
  CachePolicy p;
  p.kind = PolicyKind::kRazor, p.name = "razor";
  p.n_sink = sink, p.s0 = s0, p.c = c, p.compensation = comp;
  p.protected_heads = std::move(prot);
  return p;
}

size_t n_heads() {
  return size_t(model().config.n_layers) * model().config.n_kv_heads;
}

}  // namespace

TEST_CASE("razor with every head protected reproduces the full cache exactly", "[policy]") {
  const auto prompt = tokens(model().config, 120, 1), next = tokens(model().config, 9, 2);
  const std::vector<float> full = run(CachePolicy{}, prompt, next);
  CHECK(run(razor(4, 8, 5.0, true, std::vector<uint8_t>(n_heads(), 1)), prompt, next) == full);
  // And a policy that would drop something does change the logits (the check can fail).
  CHECK(run(razor(4, 8, 5.0, true, std::vector<uint8_t>(n_heads(), 0)), prompt, next) != full);
}

TEST_CASE("streaming with a window covering everything is the full cache", "[policy]") {
  const auto prompt = tokens(model().config, 60, 3), next = tokens(model().config, 5, 4);
  CachePolicy s;
  s.kind = PolicyKind::kStreaming, s.n_sink = 4, s.window = 56;
  CHECK(run(s, prompt, next) == run(CachePolicy{}, prompt, next));
}

// Dropped positions of a razor head with sink 4 and 20 recent tokens of 100: 4..79.
void same_middle(KVCache& c) {
  for (int l = 0; l < c.n_layers(); ++l)
    for (int g = 0; g < c.n_kv_heads(); ++g)
      for (int j = 4; j < 80; ++j) {
        std::copy_n(c.k_head(l, g) + 30 * c.head_dim(), c.head_dim(),
                    c.k_head(l, g) + j * c.head_dim());
        std::copy_n(c.v_head(l, g) + 30 * c.head_dim(), c.head_dim(),
                    c.v_head(l, g) + j * c.head_dim());
      }
}

TEST_CASE("the compensation token equals full attention over identical dropped tokens",
          "[policy]") {
  // With all 76 dropped keys and values equal, one slot with logit offset log(76) is the
  // same softmax as 76 copies: decoding after razor must match decoding over the full
  // (edited) cache up to float rounding. Tolerance: 1e-5 relative L2 on the logits.
  const auto prompt = tokens(model().config, 100, 5), next = tokens(model().config, 4, 6);
  const auto policy = razor(4, 20, 5.0, true, std::vector<uint8_t>(n_heads(), 0));
  RunState st(model().config, 1);
  const std::vector<float> comp = run(policy, prompt, next, &st, same_middle);
  const std::vector<float> full = run(CachePolicy{}, prompt, next, nullptr, same_middle);
  CHECK(st.cache.used(size_t(0)) == 4 + 1 + 20 + 4);
  double num = 0, den = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    num += std::pow(double(comp[i]) - full[i], 2);
    den += std::pow(double(full[i]), 2);
  }
  CHECK(std::sqrt(num / den) < 1e-5);
  // Without the offset the same slot would count once, and the logits differ.
  auto no_comp = policy;
  no_comp.compensation = false;
  const std::vector<float> dropped = run(no_comp, prompt, next, nullptr, same_middle);
  num = 0;
  for (size_t i = 0; i < full.size(); ++i) num += std::pow(double(dropped[i]) - full[i], 2);
  CHECK(std::sqrt(num / den) > 1e-3);
}

TEST_CASE("policies keep the slots and bytes they promise", "[policy]") {
  const ModelConfig& c = model().config;
  const int n = 100;
  const auto prompt = tokens(c, n, 7);
  RunState full(c, 1);
  run(CachePolicy{}, prompt, {}, &full);
  const size_t per_slot = size_t(2) * c.head_dim * 4;  // K and V in f32
  CHECK(full.cache.bytes_in_use() == n_heads() * n * per_slot);

  SECTION("razor: sinks, compensation, max(s0, N/C) recent; protected heads whole") {
    std::vector<uint8_t> prot(n_heads(), 0);
    prot[1] = 1;
    RunState st(c, 1);
    run(razor(4, 8, 5.0, true, prot), prompt, {}, &st);  // recent = max(8, 100/5) = 20
    CHECK(kept_slots(razor(4, 8, 5.0, true, prot), n, false) == 25);
    CHECK(st.cache.used(size_t(1)) == n);
    CHECK(st.cache.used(size_t(0)) == 25);
    CHECK(st.cache.bytes_in_use() == ((n_heads() - 1) * 25 + n) * per_slot);
    // Slot 3 = position 3 (sink), slot 4 = compensation, slot 5 = position 80.
    auto row = [&](RunState& s, int slot) { return s.cache.k_head(0, 0)[slot * c.head_dim + 1]; };
    CHECK(row(st, 3) == row(full, 3));
    CHECK(row(st, 5) == row(full, 80));
    CHECK(row(st, 24) == row(full, 99));
    CHECK(st.cache.bias_head(0, 0)[4] == Approx(std::log(76.0)).epsilon(1e-6));
    double mean = 0;
    for (int j = 4; j < 80; ++j) mean += row(full, j);
    CHECK(row(st, 4) == Approx(mean / 76).epsilon(1e-5));
  }
  SECTION("streaming: sinks + window, no compensation") {
    CachePolicy s;
    s.kind = PolicyKind::kStreaming, s.n_sink = 2, s.window = 10;
    RunState st(c, 1);
    run(s, prompt, {}, &st);
    CHECK(st.cache.bytes_in_use() == n_heads() * 12 * per_slot);
    CHECK(st.cache.k_head(1, 1)[2 * c.head_dim] == full.cache.k_head(1, 1)[90 * c.head_dim]);
    CHECK(st.cache.bias_head(0, 0) == nullptr);
  }
  SECTION("h2o: the budget, with the most-attended middle positions") {
    CachePolicy h;
    h.kind = PolicyKind::kH2O, h.n_sink = 4, h.budget = 24;
    RunState st(c, 1);
    run(h, prompt, {}, &st);
    CHECK(st.cache.bytes_in_use() == n_heads() * 24 * per_slot);
    // Recompute the expected heavy hitters of head (0, 0) from an independent mass.
    AttentionMass mass(c, n);
    RunState s2(c, n);
    ForwardOptions o;
    o.observer = &mass;
    forward(model(), s2, prompt, o);
    const std::vector<double> m0 = mass.per_kv_head()[0];
    std::vector<std::pair<double, int>> mid;
    for (int j = 4; j < n - 10; ++j) mid.push_back({-m0[size_t(j)], j});
    std::sort(mid.begin(), mid.end());
    std::vector<int> heavy;
    for (int i = 0; i < 10; ++i) heavy.push_back(mid[size_t(i)].second);
    std::sort(heavy.begin(), heavy.end());
    for (int i = 0; i < 10; ++i)
      CHECK(st.cache.k_head(0, 0)[(4 + i) * c.head_dim] ==
            full.cache.k_head(0, 0)[heavy[size_t(i)] * c.head_dim]);
  }
}

TEST_CASE("decoding continues after compression and a second compression is refused", "[policy]") {
  const auto prompt = tokens(model().config, 80, 8), next = tokens(model().config, 6, 9);
  RunState st(model().config, 1);
  const auto p = razor(4, 8, 5.0, true, std::vector<uint8_t>(n_heads(), 0));
  run(p, prompt, next, &st);
  CHECK(st.cache.used(size_t(0)) == 4 + 1 + 16 + 6);
  CHECK(st.cache.length() == 86);
  CHECK_THROWS_WITH(apply_policy(st.cache, p), Catch::Contains("already compressed"));
}
