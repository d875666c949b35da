// Random eviction, the control every method must beat: each token gets a priority from a
// hash of (seed, layer, KV head, position), so a token's fate does not depend on when the
// policy looks. No keys of its own besides the allocation's.
#include "policies.hpp"

namespace kvscope {

namespace {

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

void RandomPolicy::score(const LayerView& v, int g, int, std::vector<double>& out) const {
  const auto pos = v.cache->positions(v.layer, g);
  out.resize(pos.size());
  for (size_t j = 0; j < pos.size(); ++j) {
    const uint64_t h = mix(mix(mix(v.seed) ^ uint64_t(v.layer)) ^ (uint64_t(g) << 32) ^
                           uint64_t(uint32_t(pos[j])));
    out[j] = double(h >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  }
}

std::unique_ptr<EvictionPolicy> make_random(YamlMap& keys, const PolicyContext&) {
  auto p = std::make_unique<RandomPolicy>();
  read_allocation(keys, *p);
  return p;
}

}  // namespace kvscope
