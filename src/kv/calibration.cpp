#include "kvscope/kv/calibration.hpp"

#include <algorithm>

#include "kvscope/io/error.hpp"
#include "kvscope/io/sequences.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/forward.hpp"

namespace kvscope {

GramAccumulator& CalibrationGrams::at(int layer, const std::string& tensor) {
  auto it = layers.find(layer);
  KV_ASSERT(it != layers.end());
  const size_t i = size_t(std::find(tensors.begin(), tensors.end(), tensor) - tensors.begin());
  KV_ASSERT(i < tensors.size());
  return it->second[i];
}

namespace {

struct GramObserver : ForwardObserver {
  CalibrationGrams& g;
  int skip;
  GramObserver(CalibrationGrams& grams, int s) : g(grams), skip(s) {}
  void on_layer(const LayerCapture& c) override {
    auto it = g.layers.find(c.layer);
    if (it == g.layers.end()) return;
    for (size_t i = 0; i < g.tensors.size(); ++i) {
      const std::string& t = g.tensors[i];
      const float* x = t == "k_pre_rope" ? c.k_pre_rope : t == "k" ? c.k : c.v;
      it->second[i].add_heads(x, c.n_kv_heads, c.n_tokens, c.head_dim, skip);
    }
  }
};

}  // namespace

CalibrationGrams collect_grams(const Model& m, int32_t bos, std::span<const int32_t> stream,
                               const CalibrationOptions& opt) {
  const ModelConfig& c = m.config;
  for (const std::string& t : opt.tensors) {
    KV_CHECK(t == "k_pre_rope" || t == "k" || t == "v",
             "calibration tensor '{}' is not one of k_pre_rope, k, v", t);
    KV_CHECK(t != "k_pre_rope" || !c.compressed_keys(),
             "model '{}' compresses its keys after RoPE: it has no K before RoPE to calibrate on",
             m.name);
  }
  CalibrationGrams g;
  g.tensors = opt.tensors;
  g.seq_len = opt.seq_len > 0 ? opt.seq_len : c.default_seq_len();
  std::vector<int> layers = opt.layers;
  if (layers.empty())
    for (int l = 0; l < c.n_layers; ++l) layers.push_back(l);
  for (int l : layers) {
    KV_CHECK(l >= 0 && l < c.n_layers, "calibration layer {} is outside the model's {} layers", l,
             c.n_layers);
    g.layers.emplace(l,
                     std::vector<GramAccumulator>(opt.tensors.size(), GramAccumulator(c.kv_dim())));
  }
  const int per_seq = g.seq_len - (opt.exclude_bos ? 1 : 0);
  g.sequences = int((opt.tokens + per_seq - 1) / per_seq);
  GramObserver obs(g, opt.exclude_bos ? 1 : 0);
  RunState st(c, g.seq_len);
  ForwardOptions fo;
  fo.observer = &obs;
  fo.logits = LogitsMode::kNone;
  // Under MPI each rank runs its share of the sequences; the Grams are then summed over
  // ranks (double-double sums of per-sequence Grams: the same result for any split).
  const std::vector<size_t> offsets =
      plan_sequences(stream, g.seq_len, g.sequences, bos, opt.source, opt.keys);
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (!dist::mine(i)) continue;
    st.reset();
    forward(m, st, sequence_tokens(stream, offsets[i], g.seq_len, bos), fo);
  }
  for (auto& [l, accs] : g.layers)
    for (GramAccumulator& a : accs) a.reduce_across_ranks();
  g.tokens = int64_t(g.sequences) * per_seq;
  return g;
}

}  // namespace kvscope
