// H2O (Zhang et al. 2023): "heavy hitters", the tokens that received the most attention
// summed over every query so far (under GQA over the KV head's query heads too), plus the
// most recent tokens. Keys: recent_share (0.5: the paper splits the budget evenly between
// heavy and recent tokens), sinks (0; paper B's runs keep 4 first tokens as well).
#include "kvscope/io/error.hpp"
#include "policies.hpp"

namespace kvscope {

void H2OPolicy::score(const LayerView& v, int g, int budget, std::vector<double>& out) const {
  KV_CHECK(v.mass, "h2o: layer {} has no attention mass", v.layer);
  const auto pos = v.cache->positions(v.layer, g);
  const std::vector<double>& mass = (*v.mass)[size_t(g)];
  const int used = int(pos.size());
  int n_sinks = 0;
  for (int32_t p : pos) n_sinks += p >= 0 && p < sinks;
  const int recent = std::min(int((budget - n_sinks) * recent_share), used - n_sinks);
  out.resize(size_t(used));
  for (int j = 0; j < used; ++j)
    out[size_t(j)] = pos[size_t(j)] >= 0 && pos[size_t(j)] < sinks ? sink_score(pos[size_t(j)])
                     : j >= used - recent                          ? must_stay(pos[size_t(j)])
                                                                   : mass[size_t(j)];
}

// A real implementation holds one accumulated score per kept slot (float32).
int64_t H2OPolicy::state_bytes(const ModelConfig&, int64_t slots, int) const {
  return 4 * slots;
}

std::unique_ptr<EvictionPolicy> make_h2o(YamlMap& keys, const PolicyContext&) {
  auto p = std::make_unique<H2OPolicy>();
  p->sinks = keys.get_at_least_or<int>("sinks", 0, p->sinks);
  p->recent_share = keys.get_or<double>("recent_share", p->recent_share);
  KV_CHECK(p->recent_share >= 0 && p->recent_share <= 1, "{}: key '{}' must lie in [0, 1], got {}",
           keys.file(), keys.key_path("recent_share"), p->recent_share);
  read_allocation(keys, *p);
  return p;
}

}  // namespace kvscope
