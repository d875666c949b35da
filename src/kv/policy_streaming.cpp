// StreamingLLM: attention sinks + a recent window. Keys: sinks (4, the paper's).
#include "policies.hpp"

namespace kvscope {

void StreamingPolicy::score(const LayerView& v, int g, int, std::vector<double>& out) const {
  const auto pos = v.cache->positions(v.layer, g);
  out.resize(pos.size());
  // Sinks first, then later positions before earlier ones.
  for (size_t j = 0; j < pos.size(); ++j)
    out[j] = pos[j] >= 0 && pos[j] < sinks ? sink_score(pos[j]) : double(pos[j]);
}

std::unique_ptr<EvictionPolicy> make_streaming(YamlMap& keys, const PolicyContext&) {
  auto p = std::make_unique<StreamingPolicy>();
  p->sinks = keys.get_at_least_or<int>("sinks", 0, p->sinks);
  read_allocation(keys, *p);
  return p;
}

}  // namespace kvscope
