// KNorm (Devoto et al. 2024): keys with a low L2 norm draw the most attention, so the
// keys with the highest norm go first. The stored keys are after RoPE, a rotation, which
// leaves the norm unchanged. No keys of its own besides the allocation's.
#include <cmath>

#include "policies.hpp"

namespace kvscope {

void KNormPolicy::score(const LayerView& v, int g, int, std::vector<double>& out) const {
  const KVCache& kc = *v.cache;
  const int hd = kc.head_dim(), used = kc.used(v.layer, g);
  const float* K = kc.k_head(v.layer, g);
  out.resize(size_t(used));
  for (int j = 0; j < used; ++j) {
    double s = 0.0;
    for (int d = 0; d < hd; ++d) s += double(K[size_t(j) * hd + d]) * K[size_t(j) * hd + d];
    out[size_t(j)] = -std::sqrt(s);
  }
}

std::unique_ptr<EvictionPolicy> make_knorm(YamlMap& keys, const PolicyContext&) {
  auto p = std::make_unique<KNormPolicy>();
  read_allocation(keys, *p);
  return p;
}

}  // namespace kvscope
