// One sequence run under an eviction policy (kv/eviction.hpp): the prefill with the full
// cache, compression to the policy's budgets, then decoding one token at a time with the
// budget kept after every token when asked. Records what policies need while the model
// runs (the last queries, the attention each slot received: O(S x heads), never an S x S
// matrix) and the bytes held. Copyable: a task prefills once and copies the state per
// policy.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvscope/kv/eviction.hpp"
#include "kvscope/kv/kv_codec.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/runtime/forward.hpp"

namespace kvscope {

// A policy at a budget, as a task runs it: which slots stay (policy), how they are stored
// (codec), and on which model (merged KV heads: a reduced model of the task's).
struct Variant {
  std::string name;
  std::shared_ptr<const EvictionPolicy> policy;  // null: every slot stays
  std::shared_ptr<const KVCodec> codec;          // null: slots held as computed
  std::shared_ptr<const Model> model;            // null: the task's model
  double share = 1.0;                            // of the full cache's bytes, when budgets is empty
  std::vector<int> budgets;      // [n_layers * n_kv_heads] slots per head (paper B's runs)
  bool during_decoding = false;  // keep the budget after every decoded token
  bool peak_share = false;       // kv_share = peak held / peak full (else after prefill)
};

class CompressedRun : public ForwardObserver {
 public:
  // Room for `capacity` tokens; records what `needs` asks (the union over the variants
  // that will be compressed from this state). A codec that stores tokens as they are
  // written (KVCodec::on_store) is given here, so the prefill runs with it. The full
  // cache's bytes are those of `reference_kv_heads` heads per layer (0: the model's), so
  // that a model with merged heads is measured against the model it was made from.
  CompressedRun(const Model& m, int capacity, PolicyNeeds needs, int elem_bytes = 4,
                std::shared_ptr<const KVCodec> store_codec = nullptr, int reference_kv_heads = 0);

  // Runs the tokens with the full cache (no logits).
  void prefill(std::span<const int32_t> tokens);
  // Compresses to v's budgets; false (and nothing changed) when v's share is out of its
  // method's reach.
  bool compress(const Variant& v, uint64_t seed);
  // Decodes one token; returns its logits [vocab]. Evicts afterwards when the variant
  // keeps its budget while decoding.
  std::span<const float> step(int32_t token);

  // kv_share as the variant defines it.
  double share() const;
  double share_after_prefill() const { return share_after_prefill_; }
  int64_t peak_bytes() const { return peak_; }
  int64_t peak_full_bytes() const { return peak_full_; }
  // A copy to decode a branch from: the cache and the policy's state, not the forward
  // pass's scratch.
  CompressedRun branch() const;
  // Takes the larger peaks of a copy that decoded further (a replayed branch).
  void absorb_peaks(const CompressedRun& other);
  const RunState& state() const { return st_; }

  // ForwardObserver
  bool wants_attention() const override { return needs_.attention_mass; }
  void on_layer(const LayerCapture& cap) override;
  void on_attention(const AttentionRows& r) override;

 private:
  struct BranchTag {};
  CompressedRun(const CompressedRun& o, BranchTag);  // every member; the run state forked
  void evict();
  void encode();
  void measure();
  LayerView view(int l, const EvictionPolicy& p);
  ForwardOptions options(LogitsMode logits, bool observe);

  const Model* m_;
  RunState st_;
  PolicyNeeds needs_;
  int elem_bytes_;
  int rows_ = 0;  // window rows filled (right-aligned in each head's window_stride rows)
  std::vector<std::vector<float>> wq_;        // [n_layers][n_heads * needs_.window_queries * hd]
  std::vector<std::vector<double>> mass_q_;   // [n_layers * n_heads][slots]
  std::vector<std::vector<double>> mass_kv_;  // scratch: one layer's mass per KV head
  std::shared_ptr<const EvictionPolicy> policy_;
  std::shared_ptr<const KVCodec> codec_;
  CodecState tags_;
  int ref_heads_ = 0;
  std::vector<int> budgets_;
  bool decoding_ = false, peak_share_ = false;
  uint64_t seed_ = 0;
  int step_ = 0;
  double share_after_prefill_ = 1.0;
  int64_t peak_ = 0, peak_full_ = 0;
};

}  // namespace kvscope
