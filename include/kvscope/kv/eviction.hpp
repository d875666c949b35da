// Eviction policies on one interface: a policy scores the slots of each KV head of a layer
// (or chooses them itself) and the frame (kv/compressed_run.hpp) keeps each head within
// its budget, at the end of prefill and, when asked, after every decoded token. A method
// is one file (src/kv/policy_NAME.cpp) plus one line in src/kv/eviction.cpp's registry.
//
// Budgets are in slots per KV head. From a share s of the full cache over a prefill of n
// tokens, every head gets B = round(s * n) (uniform); `pyramid` gives layer l a budget
// that falls linearly with depth (PyramidKV) at the same total; `adaptive` pools a layer's
// heads (AdaKV): the layer keeps n_kv * B slots chosen over every head's scores at once,
// with a floor of alpha * B per head. docs/experiments.md defines every method.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvscope/io/yaml_util.hpp"
#include "kvscope/model/model_config.hpp"
#include "kvscope/runtime/kv_cache.hpp"

namespace kvscope {

// What a policy needs the frame to keep while the model runs.
struct PolicyNeeds {
  int window_queries = 0;       // the last w queries of every query head (post-RoPE)
  bool attention_mass = false;  // attention each slot received, summed over every query
};

// What a policy sees of one layer when it chooses.
struct LayerView {
  const ModelConfig* config = nullptr;
  const KVCache* cache = nullptr;  // slots of every head: keys after RoPE, values, positions
  int layer = 0;
  int step = 0;  // 0: end of prefill; k: after the k-th decoded token
  uint64_t seed = 0;
  // The last n_window queries of every query head, oldest first: query i of head h at
  // window_q[(h * window_stride + i) * head_dim], position cache->length() - n_window + i.
  const float* window_q = nullptr;
  int n_window = 0, window_stride = 0;
  // [n_kv_heads][used slots]: attention each slot received, summed over the KV head's query
  // heads and every query so far (null unless needs().attention_mass).
  const std::vector<std::vector<double>>* mass = nullptr;
};

// Slots a head keeps (ascending), and whether the dropped ones fold into one merged slot
// placed after the first merge_at kept ones (KVCache::keep).
struct HeadKeep {
  std::vector<int> slots;
  bool merge = false;
  int merge_at = 0;
};

// A layer's budget: slots per KV head (kUnlimited: never evicts), or, pooled, the layer's
// total with a floor per head.
struct LayerBudget {
  static constexpr int kUnlimited = -1;
  std::vector<int> per_head;  // [n_kv_heads]
  bool pooled = false;        // adaptive: sum(per_head) over the layer's heads, floor each
  int floor = 0;
};

enum class Allocation { kUniform, kPyramid, kAdaptive };

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  virtual PolicyNeeds needs() const { return {}; }
  // Scores of head g's used slots, out[slot]: higher stays. Slots that must stay get
  // kMustStay + their position (so that, if even those exceed the budget, the latest win).
  // `budget` is the head's (H2O sizes its recent window from it).
  virtual void score(const LayerView& v, int g, int budget, std::vector<double>& out) const = 0;
  // Which slots each KV head keeps within b. The default keeps the top scores (ties to the
  // earlier slot), per head or pooled.
  virtual std::vector<HeadKeep> select(const LayerView& v, const LayerBudget& b) const;
  // Budgets of every head [n_layers * n_kv_heads] for a share of the full cache over a
  // prefill of n tokens; empty when the share is out of the method's reach.
  virtual std::vector<int> head_budgets(const ModelConfig& c, double share, int n) const;
  // Budgets pooled per layer (adaptive allocation), with floor alpha * budget.
  virtual bool pooled() const { return allocation == Allocation::kAdaptive; }
  // Bytes of state a real implementation holds besides K and V: per kept slot (e.g. H2O's
  // accumulated score) and per layer (e.g. an observation window's queries), at
  // `elem_bytes` per stored element.
  // Counted only while a policy evicts during decoding (after prefill they are dropped).
  virtual int64_t state_bytes(const ModelConfig& c, int64_t slots, int elem_bytes) const;

  static constexpr double kMustStay = 1e15;
  Allocation allocation = Allocation::kUniform;
  double beta = 20.0;      // pyramid: the top layer keeps 1/beta of the average (PyramidKV)
  double alpha = 0.2;      // adaptive: each head's floor, as a share of its uniform budget (AdaKV)
  int protect_window = 0;  // slots at the tail the allocation counts as kept (SnapKV's window)
};

// The budget of every head under a uniform or pyramid allocation of share s over n tokens:
// pyramid gives the non-window part of layer l (protect slots stay with every layer)
// budget min + (max - min) (L - 1 - l) / (L - 1), min = avg / beta, max = 2 avg - min,
// rounded so the total is exactly L * n_kv * round(s n).
std::vector<int> allocate_budgets(const ModelConfig& c, double share, int n, Allocation a,
                                  double beta, int protect);

// Refuses, naming the policy, a cache a policy cannot start from: one holding more than
// the model's sliding window, or one already compressed (every head must hold all tokens).
void check_compressible(const KVCache& kc, const std::string& policy);

// Indices of the k largest scores, ties to the smaller index, ascending.
std::vector<int> top_slots(const std::vector<double>& scores, int k);

// The attention weights of the view's window queries over head g's slots (its group's
// query heads, causal by position, with the cache's logit offsets and the model's soft
// cap), summed over the window's queries and the query heads: summed [used].
void window_attention(const LayerView& v, int g, std::vector<double>& summed);

// The registry: one line per method in src/kv/eviction.cpp. A factory reads the method's
// keys from `keys` (its entry in a config, or an empty map for the defaults); `extra`
// holds what a method needs from the run (razor: the protected heads).
struct PolicyContext {
  std::vector<uint8_t> protected_heads;  // [n_layers * n_kv_heads] razor's retrieval heads
};
struct EvictionMethod {
  std::string name, summary;
  bool needs_retrieval_heads = false;
  std::function<std::unique_ptr<EvictionPolicy>(YamlMap& keys, const PolicyContext& ctx)> make;
};
const std::vector<EvictionMethod>& eviction_methods();
// Adds a method at run time (the Python module's policies), after the built-in ones; the
// same name again replaces it. A built-in name, or one with '+', a space or '/' (which the
// frontier's labels and file names use), is refused by name. Not thread-safe: register
// before a run starts.
void register_eviction_method(EvictionMethod m);
// Removes a method register_eviction_method added; false when there is none of that name.
bool unregister_eviction_method(const std::string& name);
const EvictionMethod& eviction_method(const std::string& name, const std::string& where);

// Method factories (one per file).
std::unique_ptr<EvictionPolicy> make_streaming(YamlMap& keys, const PolicyContext&);
std::unique_ptr<EvictionPolicy> make_razor(YamlMap& keys, const PolicyContext&);
std::unique_ptr<EvictionPolicy> make_h2o(YamlMap& keys, const PolicyContext&);
std::unique_ptr<EvictionPolicy> make_snapkv(YamlMap& keys, const PolicyContext&);
std::unique_ptr<EvictionPolicy> make_pyramidkv(YamlMap& keys, const PolicyContext&);
std::unique_ptr<EvictionPolicy> make_adakv(YamlMap& keys, const PolicyContext&);
std::unique_ptr<EvictionPolicy> make_tova(YamlMap& keys, const PolicyContext&);
std::unique_ptr<EvictionPolicy> make_knorm(YamlMap& keys, const PolicyContext&);
std::unique_ptr<EvictionPolicy> make_random(YamlMap& keys, const PolicyContext&);

}  // namespace kvscope
