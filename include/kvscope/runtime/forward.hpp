// The forward pass: batched prefill over a sequence with GEMMs, incremental decoding
// with a KV cache, and observers that see each layer's Q, K (before and after RoPE), V
// and optionally the attention weights. With no observer nothing extra is copied.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "kvscope/model/model.hpp"
#include "kvscope/runtime/kv_cache.hpp"
#include "kvscope/runtime/ops.hpp"

namespace kvscope {

// What an observer receives for each layer, for the tokens of one forward() call.
struct LayerCapture {
  int layer;
  int pos0;      // absolute position of the first token of this call
  int n_tokens;  // T
  int n_heads, n_kv_heads, head_dim;
  const float* q;           // [n_heads, T, head_dim], after RoPE
  const float* k_pre_rope;  // [n_kv_heads, T, head_dim]
  const float* k;           // [n_kv_heads, T, head_dim], after RoPE
  const float* v;           // [n_kv_heads, T, head_dim]
  const float* attn_out;    // [T, n_heads*head_dim]: per-head attention output, before W_O
  const float* attn_proj;   // [T, dim]: the attention block's output (after W_O), or null
                            // unless the observer wants_attn_proj()
  // For models with compressed keys (ModelConfig::k_proj_heads), k_pre_rope is null and
  // k holds the cached (compressed) keys.
};

// Softmax rows of one query head for a block of this call's queries.
struct AttentionRows {
  int layer;
  int head;              // query head
  int q_begin;           // first query row, 0-based within this call
  int n_q;               // rows in this block
  int n_keys;            // columns: cache slots 0..n_keys-1 (slot i holds absolute position i
                         // under the full cache)
  const float* weights;  // [n_q, n_keys], row stride n_keys; masked entries are 0
};

// The per-head captures a LayerCapture carries.
enum class CaptureKind { kQ, kKPreRope, kK, kV };

class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  // Where the forward pass should write this layer's capture of `kind` ([heads, T,
  // head_dim], n floats): memory of the observer's, so a sink that keeps the data (a dump's
  // write buffer) gets it without another copy. nullptr: the run state's own buffer.
  // The pointer must stay valid until on_layer() for this layer returns.
  virtual float* capture_target(int layer, CaptureKind kind, size_t n) {
    (void)layer, (void)kind, (void)n;
    return nullptr;
  }
  // Attention weights cost a copy per block; only observers that ask get them.
  virtual bool wants_attention() const { return false; }
  // The attention block's output after W_O costs a separate GEMM; only if asked.
  virtual bool wants_attn_proj() const { return false; }
  virtual void on_layer(const LayerCapture&) {}
  // Called from worker threads: concurrently for different heads, in query order for
  // one head. Never holds more than a block of rows: no [S, S] matrix is built.
  virtual void on_attention(const AttentionRows&) {}
};

namespace runtime_detail {
struct Scratch;  // forward.cpp: the activations and observer copies of one call
// Owns a Scratch, made on first use. A copy starts empty: what a Scratch holds lives for
// one forward call, so copying a RunState copies the sequence, not its scratch.
class ScratchPtr {
 public:
  ScratchPtr() noexcept;
  ~ScratchPtr();
  ScratchPtr(const ScratchPtr&) noexcept;
  ScratchPtr& operator=(const ScratchPtr&) noexcept;
  ScratchPtr(ScratchPtr&&) noexcept;
  ScratchPtr& operator=(ScratchPtr&&) noexcept;
  Scratch& get();

 private:
  std::unique_ptr<Scratch> p_;
};
}  // namespace runtime_detail

// Activations and cache of one sequence. Reuse it across calls to decode; reset() to
// start a new sequence without reallocating.
class RunState {
 public:
  RunState(const ModelConfig& c, int capacity);
  void reset() {
    pos = 0;
    cache.clear();
  }
  // A state that continues this sequence: its position, cache and RoPE tables, without
  // the last call's logits, so a copy to branch from costs the cache only.
  RunState fork() const {
    RunState r(*this, 0);
    return r;
  }

  int pos = 0;  // absolute position of the next token
  KVCache cache;
  std::vector<float> logits;  // [rows, vocab] of the last call (rows per LogitsMode)
  RopeAngles rope[2];         // rotation angles by position: global layers, Gemma 3's local ones

  // The forward pass's scratch (opaque outside forward.cpp), grown on demand.
  runtime_detail::Scratch& scratch() { return scratch_.get(); }

 private:
  RunState(const RunState& other, int)
      : pos(other.pos), cache(other.cache), rope{other.rope[0], other.rope[1]} {}
  runtime_detail::ScratchPtr scratch_;

 public:
  RunState(const RunState&) = default;
  RunState& operator=(const RunState&) = default;
  RunState(RunState&&) = default;
  RunState& operator=(RunState&&) = default;
};

enum class LogitsMode { kAll, kLast, kNone };

struct ForwardOptions {
  LogitsMode logits = LogitsMode::kAll;
  ForwardObserver* observer = nullptr;
  int query_block = 64;  // attention query rows per block
  // Stored (not float32) weight matrices bigger than this in float32 are widened this many
  // bytes of rows at a time inside their product, not whole with the layer: the block is
  // read back from cache instead of memory, and a 7B layer needs 32 MiB, not 800 MB.
  // Measured on a 7B-shaped BF16 prefill (bench_big_prefill --block-mib): 8 MiB 72%,
  // 16 MiB 77-81%, 32 MiB 84-85%, 64 MiB 77% of the same run's sgemm rate; smaller blocks
  // repack the activations more often, bigger ones fall out of cache. Any value gives the
  // same products up to float rounding.
  size_t widen_block_bytes = size_t(32) << 20;
  // One token per call (decoding) multiplies stored matrices on their stored rows
  // (runtime/stored_gemv.hpp), and their mapped pages stay mapped from token to token when
  // the model's stored (not float32) weights take at most this many bytes (0: the
  // machine's physical memory); above it each layer hands its pages back once its products
  // are done, as prefill always does.
  size_t mapped_budget_bytes = 0;
  // Called after layer l has appended this call's T tokens to the cache (slots
  // used(l, g) .. used(l, g) + T - 1 of each KV head) and before attention reads them: a
  // cache that stores tokens quantized (kv/kv_codec.hpp) encodes them here.
  std::function<void(int layer, int T)> on_append = nullptr;
};

// Runs `tokens` at positions state.pos.. (appending their K/V to the cache) and
// returns the logits: [T, vocab] for kAll, [1, vocab] (last token) for kLast.
std::span<const float> forward(const Model& m, RunState& state, std::span<const int32_t> tokens,
                               const ForwardOptions& opt = {});

}  // namespace kvscope
