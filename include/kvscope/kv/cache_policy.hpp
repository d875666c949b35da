// Paper B's cache policies as its experiments configure them, applied once to a full cache
// after prefill and kept during decoding (new tokens are appended to every head). They are
// the eviction methods of kv/eviction.hpp (streaming, razor, h2o) at budgets sized the way
// paper B sizes them; the attention kernel is left alone: a policy only decides which
// slots a head keeps, and may add one slot that stands for the tokens it dropped.
//
//   full       every token
//   streaming  every head keeps n_sink first tokens + the `window` most recent (StreamingLLM)
//   razor      protected (retrieval) heads keep every token; the others keep n_sink first
//              tokens, the most recent max(s0, N / c) and, with `compensation`, one token for
//              the N_d dropped ones: mean of their post-RoPE keys and of their values, with a
//              logit offset of log(N_d) so that it weighs as N_d identical tokens would
//              (RazorAttention; form from the authors' production code)
//   h2o        every head keeps `budget` slots: n_sink first tokens, the most recent half of
//              the rest, and the "heavy hitters" with the most attention received during
//              prefill (H2O)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvscope/kv/compressed_run.hpp"
#include "kvscope/runtime/forward.hpp"

namespace kvscope {

enum class PolicyKind { kFull, kStreaming, kRazor, kH2O };

struct CachePolicy {
  PolicyKind kind = PolicyKind::kFull;
  std::string name = "full";             // label in tables
  int n_sink = 4;                        // N0
  int window = 0;                        // streaming: recent tokens per head
  int s0 = 64;                           // razor: at least this many recent tokens
  double c = 5.0;                        // razor: recent tokens = max(s0, N / c)
  bool compensation = true;              // razor: add the compensation token
  std::vector<uint8_t> protected_heads;  // razor: [n_layers * n_kv_heads], 1 = keep all
  int budget = 0;                        // h2o: slots per head
};

// Slots one head keeps under `p` after a prefill of n tokens.
int kept_slots(const CachePolicy& p, int n, bool is_protected);

// The policy as an eviction method with an explicit budget per head, after a prefill of n
// tokens: what the tasks run (kept_slots per head; null policy for full).
Variant paper_b_variant(const CachePolicy& p, int n_layers, int n_kv_heads, int n);

// Compresses every head of `cache`, which must hold a full prefill of cache.length tokens.
// h2o needs `attention_mass` [n_layers * n_kv_heads][cache.length]: the attention each
// position received during that prefill.
void apply_policy(KVCache& cache, const CachePolicy& p,
                  const std::vector<std::vector<double>>* attention_mass = nullptr);

// Accumulates, during a prefill, the attention each position receives per KV head (summed
// over queries and over the query heads that share the KV head): what h2o needs.
class AttentionMass : public ForwardObserver {
 public:
  AttentionMass(const ModelConfig& c, int tokens);
  bool wants_attention() const override { return true; }
  void on_attention(const AttentionRows& r) override;
  // [n_layers * n_kv_heads][tokens]
  std::vector<std::vector<double>> per_kv_head() const;

 private:
  int n_layers_, n_heads_, n_kv_, tokens_;
  std::vector<std::vector<double>> per_q_;  // [n_layers * n_heads][tokens]: one writer each
};

}  // namespace kvscope
