// The KV cache of one sequence: K (after RoPE) and V of every layer and KV head, head-major
// so each head's keys are contiguous for the attention GEMMs, with the absolute position
// each slot holds. Under the full cache slot i of every head holds position i; a cache
// policy (kv/eviction.hpp) keeps different slots per head through keep(), which may fold
// the dropped slots into one that stands for all of them (its logit gets bias = log(count)).
// Callers read the bookkeeping through methods and change it only through append/commit,
// keep and mark/rollback, so a compacted cache cannot disagree with its positions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvscope {

struct ModelConfig;

class KVCache {
 public:
  static constexpr int32_t kMerged = -1;  // position of a slot that stands for several

  KVCache() = default;
  KVCache(const ModelConfig& c, int capacity);

  int n_layers() const { return n_layers_; }
  int n_kv_heads() const { return n_kv_heads_; }
  int head_dim() const { return head_dim_; }
  int capacity() const { return capacity_; }  // slots per head
  int window() const { return window_; }      // the model's sliding window (0: none)
  int length() const { return length_; }      // tokens appended since clear() (positions)
  int heads() const { return n_layers_ * n_kv_heads_; }

  size_t head(int l, int g) const { return size_t(l) * n_kv_heads_ + size_t(g); }
  float* k_head(int l, int g) { return k_.data() + head(l, g) * capacity_ * head_dim_; }
  float* v_head(int l, int g) { return v_.data() + head(l, g) * capacity_ * head_dim_; }
  const float* k_head(int l, int g) const { return k_.data() + head(l, g) * capacity_ * head_dim_; }
  const float* v_head(int l, int g) const { return v_.data() + head(l, g) * capacity_ * head_dim_; }
  // [capacity] logit offset per slot, or null when no slot of the head has one.
  const float* bias_head(int l, int g) const {
    return biased_[head(l, g)] ? bias_.data() + head(l, g) * capacity_ : nullptr;
  }
  // [used(h)] absolute position of each slot (kMerged for a slot standing for several).
  std::span<const int32_t> positions(int l, int g) const {
    return {pos_.data() + head(l, g) * capacity_, size_t(used_[head(l, g)])};
  }
  int used(size_t h) const { return used_[h]; }  // slots in use of head h = head(l, g)
  int used(int l, int g) const { return used_[head(l, g)]; }
  // Tokens a slot of kMerged stands for (0 when the head has none).
  int merged_count(int l, int g) const { return merged_[head(l, g)]; }
  bool edited(size_t h) const { return edited_[h] != 0; }  // a policy has kept a subset
  int max_used() const;
  bool any_edited() const;
  int64_t slots_in_use() const;  // summed over layers and heads
  // Bytes of K and V actually kept (f32), summed over layers and heads.
  size_t bytes_in_use() const { return size_t(slots_in_use()) * 2 * head_dim_ * 4; }

  // Sliding windows: after each forward call a windowed layer's unedited heads keep only
  // their last `window` slots (the positions the next query can still see), as in
  // transformers' sliding-window caches. Off for callers that mark() a prefill and
  // rollback() to it to replay decoding.
  void set_trim_windows(bool on) { trim_windows_ = on; }

  // Writes T tokens of layer l (keys [T, stride] with KV head g at column g * head_dim,
  // values likewise) after each head's used slots. The slots count once commit(T) runs,
  // after every layer has appended (attention of layer l reads them through used + T).
  void append(int l, const float* keys, const float* values, int stride, int T);
  void commit(int T);

  // Keeps the slots `kept` (ascending indices into the head's used slots) of head (l, g)
  // and drops the rest. With `merge`, the dropped slots are folded into one slot placed
  // after the first `merge_at` kept ones: the mean of their keys and values (a slot that
  // already stands for n tokens counts n times), with a logit offset log(count) so that
  // it weighs as that many identical tokens would (RazorAttention's compensation token).
  // An existing merged slot must be among the dropped ones when merge is set.
  void keep(int l, int g, std::span<const int> kept, bool merge = false, int merge_at = 0);

  // The state to return to after decoding some tokens that no keep() touched.
  struct Mark {
    std::vector<int> used;
    int length = 0;
    uint64_t edits = 0;
  };
  Mark mark() const { return {used_, length_, edits_}; }
  void rollback(const Mark& m);

  void clear();

 private:
  void trim_to_windows();

  int n_layers_ = 0, n_kv_heads_ = 0, head_dim_ = 0, capacity_ = 0, window_ = 0, length_ = 0;
  std::vector<float> k_, v_;       // [n_layers, n_kv_heads, capacity, head_dim]
  std::vector<float> bias_;        // [n_layers, n_kv_heads, capacity]
  std::vector<int32_t> pos_;       // [n_layers, n_kv_heads, capacity]
  std::vector<int> used_;          // [n_layers * n_kv_heads]
  std::vector<int> merged_;        // [n_layers * n_kv_heads] tokens the merged slot holds
  std::vector<uint8_t> biased_;    // [n_layers * n_kv_heads]
  std::vector<uint8_t> edited_;    // [n_layers * n_kv_heads]
  std::vector<int> layer_window_;  // [n_layers] 0: global layer
  bool trim_windows_ = true;
  uint64_t edits_ = 0;  // keep() calls so far: a Mark is valid while unchanged
};

}  // namespace kvscope
