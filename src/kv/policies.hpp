// The eviction methods' classes (private to the kv module): cache_policy.cpp builds paper
// B's policies from them, the registry (eviction.cpp) from config keys.
#pragma once

#include <cstdint>
#include <vector>

#include "kvscope/kv/eviction.hpp"

namespace kvscope {

// Sinks score above everything (the earliest first), then must-stay slots by position.
inline double sink_score(int32_t pos) {
  return 2 * EvictionPolicy::kMustStay - double(pos);
}
inline double must_stay(int32_t pos) {
  return EvictionPolicy::kMustStay + double(pos);
}

// The keys every scored method takes: allocation (uniform, pyramid, adaptive; the policy's
// own as default), beta (pyramid) and alpha (adaptive).
void read_allocation(YamlMap& keys, EvictionPolicy& p);

// StreamingLLM (Xiao et al. 2024): the first `sinks` tokens and the most recent ones.
class StreamingPolicy : public EvictionPolicy {
 public:
  int sinks = 4;
  void score(const LayerView& v, int g, int budget, std::vector<double>& out) const override;
};

// RazorAttention (Tang et al. 2024): protected (retrieval) heads keep every token; the
// others keep `sinks` first tokens, a recent window and one compensation token for the
// dropped ones. The window is budget - sinks - 1 (paper B's runs size the budget from
// max(s0, N / c); the frontier from the share left after the protected heads).
class RazorPolicy : public EvictionPolicy {
 public:
  int sinks = 4;
  bool compensation = true;
  std::vector<uint8_t> protected_heads;  // [n_layers * n_kv_heads]
  void score(const LayerView& v, int g, int budget, std::vector<double>& out) const override;
  std::vector<HeadKeep> select(const LayerView& v, const LayerBudget& b) const override;
  std::vector<int> head_budgets(const ModelConfig& c, double share, int n) const override;
  int64_t state_bytes(const ModelConfig& c, int64_t slots, int elem_bytes) const override;
};

// H2O (Zhang et al. 2023): the most recent recent_share of the budget after the sinks, and
// the slots with the most attention received so far (heavy hitters).
class H2OPolicy : public EvictionPolicy {
 public:
  int sinks = 0;
  double recent_share = 0.5;
  PolicyNeeds needs() const override { return {0, true}; }
  void score(const LayerView& v, int g, int budget, std::vector<double>& out) const override;
  int64_t state_bytes(const ModelConfig& c, int64_t slots, int elem_bytes) const override;
};

// SnapKV (Li et al. 2024), and with pyramid or adaptive allocation PyramidKV / AdaKV: the
// attention of the last `window` queries summed over them and over the KV head's query
// heads, max-pooled over `kernel` neighbouring slots; the window itself always stays.
class SnapKVPolicy : public EvictionPolicy {
 public:
  int window = 32;
  int kernel = 7;
  PolicyNeeds needs() const override { return {window, false}; }
  void score(const LayerView& v, int g, int budget, std::vector<double>& out) const override;
  int64_t state_bytes(const ModelConfig& c, int64_t slots, int elem_bytes) const override;
};

// TOVA (Oren et al. 2024): the current query's attention averaged over the layer's query
// heads; every KV head of the layer keeps the same positions.
class TOVAPolicy : public EvictionPolicy {
 public:
  PolicyNeeds needs() const override { return {1, false}; }
  void score(const LayerView& v, int g, int budget, std::vector<double>& out) const override;
};

// KNorm (Devoto et al. 2024): the keys with the lowest L2 norm.
class KNormPolicy : public EvictionPolicy {
 public:
  void score(const LayerView& v, int g, int budget, std::vector<double>& out) const override;
};

// A control: every token gets a random priority (seeded by run seed, layer, head and
// position), the highest stay.
class RandomPolicy : public EvictionPolicy {
 public:
  void score(const LayerView& v, int g, int budget, std::vector<double>& out) const override;
};

}  // namespace kvscope
