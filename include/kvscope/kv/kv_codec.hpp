// How the cache stores K and V besides which slots it keeps: quantized (llama.cpp's block
// types, KIVI, pre-RoPE keys with outliers), projected onto a low-rank basis (Palu) or with
// key channels pruned (ThinK). A codec encodes the slots that are due in place, replacing
// each with what decoding its stored form gives back, so the forward pass reads exactly
// what a real implementation would; the bytes are counted as that implementation would
// store them: payload bits plus every scale, zero point, outlier value and index, channel
// mask and full-precision residual token. Bases and calibration are counted apart
// (side_bytes). A codec composes with an eviction policy (kv/compressed_run.hpp): the
// policy chooses the slots, the codec encodes what stays. docs/experiments.md defines each.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvscope/io/yaml_util.hpp"
#include "kvscope/kv/calibration.hpp"
#include "kvscope/kv/eviction.hpp"
#include "kvscope/runtime/ops.hpp"

namespace kvscope {

// Which stored form each slot of each head is in, carried through eviction with the slots.
// A tag is 0 for a slot held as computed (at the run's element precision) or the id of a
// group: `member` bytes for each slot in it, plus `shared` bytes held once while any slot
// of the group (in any head) stays: a channel group's scales, a token's low-rank latent.
class CodecState {
 public:
  std::vector<std::vector<int32_t>> k, v;  // [heads][used slots]

  int32_t group(int64_t shared, int64_t member);
  // Grows every head's tags to the cache's used slots (new slots: 0).
  void sync(const KVCache& kc);
  // After kc.keep(l, g, kept, merge, ...): the kept slots' tags follow them; a merged slot
  // is held as computed.
  void follow(const KVCache& kc, int l, int g, std::span<const int> kept);
  // Bytes of K and V held, at elem_bytes per element for untagged slots.
  int64_t bytes(const KVCache& kc, int elem_bytes) const;

 private:
  struct Group {
    int64_t shared = 0, member = 0;
  };
  std::vector<Group> groups_;
  std::map<int64_t, int32_t> plain_;  // member bytes -> id of the group with nothing shared
};

// What a codec sees when it encodes.
struct CodecView {
  const ModelConfig* config = nullptr;
  KVCache* cache = nullptr;
  CodecState* state = nullptr;
  const RopeAngles* rope[2] = {nullptr, nullptr};  // the run's angles: global, local layers
  int step = 0;                                    // 0: end of prefill; k: after token k
  // The last queries of every query head per layer, as LayerView holds them (ThinK).
  const std::vector<std::vector<float>>* window_q = nullptr;
  int n_window = 0, window_stride = 0;
  int elem_bytes = 2;  // bytes of an element held as computed (outliers, residual tokens)
};

class KVCodec {
 public:
  virtual ~KVCodec() = default;
  virtual PolicyNeeds needs() const { return {}; }
  // Why the codec cannot run on a model ("" when it can): the frontier then has no row.
  virtual std::string unreachable(const ModelConfig& c) const {
    (void)c;
    return {};
  }
  // Encodes, in place, the slots now due (after the prefill and its eviction, step 0, and
  // after each decoded token).
  virtual void encode(const CodecView& v) const = 0;
  // Codecs that store every token as it is written (llama.cpp's cache types): the prefill
  // must run with the codec, because attention inside it reads the stored form. store()
  // encodes the T slots layer l has just appended (after used(l, g)) before attention.
  virtual bool on_store() const { return false; }
  virtual void store(const CodecView& v, int l, int T) const { (void)v, (void)l, (void)T; }
  // Whether a per-head eviction policy can run first (a latent shared by several heads
  // cannot be dropped by one).
  virtual bool per_head() const { return true; }
  // Bytes held outside the cache for every context (bases).
  virtual int64_t side_bytes(int elem_bytes) const {
    (void)elem_bytes;
    return 0;
  }
};

// The registry: one line per method in src/kv/kv_codec.cpp. `share` is the knob of the
// methods that take a budget (low rank: rank share; ThinK: key channels kept); the others
// ignore it. A factory called with no model only reads and checks its keys.
struct CodecContext {
  const Model* model = nullptr;
  CalibrationGrams* grams = nullptr;  // "k_pre_rope" and "v" of every layer (low rank)
};
struct CodecMethod {
  std::string name, family, summary;
  bool takes_budget = false;
  bool needs_calibration = false;
  std::function<std::shared_ptr<const KVCodec>(YamlMap& keys, const CodecContext& ctx,
                                               double share)>
      make;
};
const std::vector<CodecMethod>& codec_methods();
const CodecMethod* find_codec_method(const std::string& name);

// Encoding primitives (also what the tests compare with independent implementations).
// Asymmetric uniform quantization of x[i * stride] (i < n), skipping entries flagged in
// `exact` (held as they are): scale = (max - min) / (2^bits - 1) and min stored as halves,
// code = clamp(round((x - min) / scale), 0, 2^bits - 1), x <- code * scale + min.
void quantize_uniform(float* x, int n, int stride, int bits, const uint8_t* exact = nullptr);
// Flags the `count` entries of largest magnitude among x[0..n) (ties to the earlier).
void flag_largest(const float* x, int n, int count, uint8_t* flags);
// Rotates a key [head_dim] held at `pos` back to before RoPE (inverse) or forward again.
void rope_rotate(float* x, int head_dim, int pos, const RopeAngles& a, RopeLayout layout,
                 bool inverse);

// Factories (one per file).
std::shared_ptr<const KVCodec> make_ggml_codec(YamlMap& keys, const std::string& k_type,
                                               const std::string& v_type);
std::shared_ptr<const KVCodec> make_uniform_codec(YamlMap& keys, bool kvquant);
std::shared_ptr<const KVCodec> make_lowrank_codec(YamlMap& keys, const CodecContext& ctx,
                                                  double share);
std::shared_ptr<const KVCodec> make_think_codec(YamlMap& keys, double share);

}  // namespace kvscope
