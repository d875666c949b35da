// TOVA (Oren et al. 2024): the current query's attention weights, averaged over all the
// layer's query heads; the lowest goes. Every KV head of a layer so holds the same tokens.
// At the end of prefill the current query is the last prefill token's. Keys: the
// allocation's (uniform or pyramid: a layer shares one decision).
#include "kvscope/io/error.hpp"
#include "policies.hpp"

namespace kvscope {

void TOVAPolicy::score(const LayerView& v, int, int, std::vector<double>& out) const {
  const KVCache& kc = *v.cache;
  const auto pos0 = kc.positions(v.layer, 0);
  out.assign(pos0.size(), 0.0);
  std::vector<double> s;
  for (int g = 0; g < kc.n_kv_heads(); ++g) {
    const auto pos = kc.positions(v.layer, g);
    KV_CHECK(std::equal(pos.begin(), pos.end(), pos0.begin(), pos0.end()),
             "tova: the KV heads of layer {} hold different tokens", v.layer);
    window_attention(v, g, s);
    for (size_t j = 0; j < s.size(); ++j) out[j] += s[j] / v.config->n_heads;
  }
}

std::unique_ptr<EvictionPolicy> make_tova(YamlMap& keys, const PolicyContext&) {
  auto p = std::make_unique<TOVAPolicy>();
  read_allocation(keys, *p);
  KV_CHECK(p->allocation != Allocation::kAdaptive,
           "{}: key '{}': tova takes one decision per layer, so adaptive allocation (per head) "
           "does not apply",
           keys.file(), keys.key_path("allocation"));
  return p;
}

}  // namespace kvscope
