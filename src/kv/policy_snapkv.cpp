// SnapKV (Li et al. 2024): the attention of the last `window` queries (the observation
// window) on every earlier slot, summed over the window's queries and the KV head's query
// heads, max-pooled over `kernel` neighbouring slots (so a kept token keeps its
// neighbours); the top scores stay, and so does the window. PyramidKV (Cai et al. 2024)
// and AdaKV (Feng et al. 2024) are the same scores with pyramid or adaptive allocation.
// Keys: window (32), kernel (7), and the allocation's (beta 20, alpha 0.2).
#include <algorithm>

#include "kvscope/io/error.hpp"
#include "policies.hpp"

namespace kvscope {

void SnapKVPolicy::score(const LayerView& v, int g, int, std::vector<double>& out) const {
  const auto pos = v.cache->positions(v.layer, g);
  const int used = int(pos.size());
  std::vector<double> att;
  window_attention(v, g, att);
  // The window is the tail: slots at positions within the last `window` tokens.
  const int32_t first_window = v.cache->length() - window;
  int m = used;  // slots before the window
  while (m > 0 && pos[size_t(m - 1)] >= first_window) --m;
  out.resize(size_t(used));
  const int r = kernel / 2;
  for (int j = 0; j < m; ++j) {
    double best = att[size_t(std::max(0, j - r))];
    for (int i = std::max(0, j - r); i <= std::min(m - 1, j + r); ++i)
      best = std::max(best, att[size_t(i)]);
    out[size_t(j)] = best;
  }
  for (int j = m; j < used; ++j) out[size_t(j)] = must_stay(pos[size_t(j)]);
}

// While evicting during decoding a real implementation keeps the window's queries to
// rescore with: window * n_heads * head_dim elements per layer.
int64_t SnapKVPolicy::state_bytes(const ModelConfig& c, int64_t, int elem_bytes) const {
  return int64_t(c.n_layers) * c.n_heads * window * c.head_dim * elem_bytes;
}

namespace {

std::unique_ptr<SnapKVPolicy> read_snapkv(YamlMap& keys, Allocation a) {
  auto p = std::make_unique<SnapKVPolicy>();
  p->window = keys.get_at_least_or<int>("window", 1, p->window);
  p->kernel = keys.get_at_least_or<int>("kernel", 1, p->kernel);
  KV_CHECK(p->kernel % 2 == 1, "{}: key '{}' must be odd (a centred pooling window), got {}",
           keys.file(), keys.key_path("kernel"), p->kernel);
  p->allocation = a;
  read_allocation(keys, *p);
  p->protect_window = p->window;
  return p;
}

}  // namespace

std::unique_ptr<EvictionPolicy> make_snapkv(YamlMap& keys, const PolicyContext&) {
  return read_snapkv(keys, Allocation::kUniform);
}
std::unique_ptr<EvictionPolicy> make_pyramidkv(YamlMap& keys, const PolicyContext&) {
  return read_snapkv(keys, Allocation::kPyramid);
}
std::unique_ptr<EvictionPolicy> make_adakv(YamlMap& keys, const PolicyContext&) {
  return read_snapkv(keys, Allocation::kAdaptive);
}

}  // namespace kvscope
