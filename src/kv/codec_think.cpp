// ThinK (Xu et al. 2024): per KV head, keep the key channels with the largest
// query-weighted magnitude and drop the rest. Channel c of head g scores
// ||Q[:, c]|| * ||K[:, c]||: Q the last `window` queries of the head's query heads, K the
// head's keys (after RoPE, as the cache holds them), i.e. the size of channel c's share of
// Q K^T. The round(share * head_dim) best stay (at least 1); the others are held as zero.
// ThinK prunes the prefill's keys once; keys decoded later stay whole, and values are not
// touched. Bytes: the kept channels per key plus a head_dim-bit mask per head.
// Keys: window (32, SnapKV's observation window).
#include <cmath>

#include "kvscope/io/error.hpp"
#include "kvscope/kv/kv_codec.hpp"

namespace kvscope {

namespace {

class ThinKCodec : public KVCodec {
 public:
  int window = 32;
  double share = 1.0;

  PolicyNeeds needs() const override { return {window, false}; }
  std::string unreachable(const ModelConfig& c) const override {
    if (c.compressed_keys()) return "the model caches compressed keys";
    return {};
  }

  void encode(const CodecView& v) const override {
    if (v.step != 0) return;
    KVCache& kc = *v.cache;
    CodecState& st = *v.state;
    st.sync(kc);
    const ModelConfig& c = *v.config;
    const int hd = kc.head_dim(), group = c.group_size();
    const int keep = std::clamp(int(std::lround(share * hd)), 1, hd);
    KV_CHECK(v.window_q && v.n_window > 0, "ThinK: the prefill recorded no queries");
    std::vector<double> qn(static_cast<size_t>(hd)), kn(static_cast<size_t>(hd)),
        score(static_cast<size_t>(hd));
    for (int l = 0; l < kc.n_layers(); ++l) {
      const float* wq = (*v.window_q)[size_t(l)].data() + size_t(v.window_stride - v.n_window) * hd;
      for (int g = 0; g < kc.n_kv_heads(); ++g) {
        std::fill(qn.begin(), qn.end(), 0.0), std::fill(kn.begin(), kn.end(), 0.0);
        for (int h = g * group; h < (g + 1) * group; ++h)
          for (int i = 0; i < v.n_window; ++i)
            for (int e = 0; e < hd; ++e) {
              const double q = wq[(size_t(h) * v.window_stride + i) * hd + e];
              qn[size_t(e)] += q * q;
            }
        const auto pos = kc.positions(l, g);
        const size_t hh = kc.head(l, g);
        float* K = kc.k_head(l, g);
        for (size_t i = 0; i < pos.size(); ++i)
          if (pos[i] != KVCache::kMerged && st.k[hh][i] == 0)
            for (int e = 0; e < hd; ++e) kn[size_t(e)] += double(K[i * hd + e]) * K[i * hd + e];
        for (int e = 0; e < hd; ++e) score[size_t(e)] = std::sqrt(qn[size_t(e)] * kn[size_t(e)]);
        const std::vector<int> kept = top_slots(score, keep);
        std::vector<uint8_t> on(static_cast<size_t>(hd), 0);
        for (int e : kept) on[size_t(e)] = 1;
        const int32_t tag = st.group((hd + 7) / 8, int64_t(keep) * v.elem_bytes);
        for (size_t i = 0; i < pos.size(); ++i) {
          if (pos[i] == KVCache::kMerged || st.k[hh][i] != 0) continue;
          for (int e = 0; e < hd; ++e)
            if (!on[size_t(e)]) K[i * hd + e] = 0.0f;
          st.k[hh][i] = tag;
        }
      }
    }
  }
};

}  // namespace

std::shared_ptr<const KVCodec> make_think_codec(YamlMap& keys, double share) {
  auto c = std::make_shared<ThinKCodec>();
  c->window = keys.get_at_least_or<int>("window", 1, 32);
  c->share = share;
  return c;
}

}  // namespace kvscope
