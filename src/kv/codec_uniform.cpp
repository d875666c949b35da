// KIVI (Liu et al. 2024) and, after KVQuant (Hooper et al. 2024), per-channel key
// quantization before RoPE with dense-and-sparse outliers: asymmetric uniform quantization
// (kv_codec.hpp's quantize_uniform) of
//   keys    per channel: a group is `group` slots of one head; each channel of it has its
//           own scale and minimum. Slots are grouped once `residual` of them (a multiple of
//           group; 0: group) are held in full precision, all of them at once, so the newest
//           (n mod residual) stay exact (KIVI's Algorithm 1);
//   values  per token: each slot's head_dim elements in runs of min(group, head_dim), each
//           with its scale and minimum, once the slot is older than the newest `residual`.
// With pre_rope, a key is rotated back to before RoPE, quantized, and rotated again (a real
// implementation stores it before RoPE and rotates after dequantizing). With outliers = f,
// the round(f * entries) entries of largest magnitude of each key group (and of each
// value slot) are held exactly at the run's element precision, with a 32-bit index each,
// and left out of the range. Slots that stand for several (razor's) stay exact.
// Keys: bits, k_bits, v_bits, group, residual, pre_rope, outliers.
#include <fmt/format.h>

#include <cmath>

#include "kvscope/io/error.hpp"
#include "kvscope/kv/kv_codec.hpp"
#include "kvscope/model/dtype.hpp"

namespace kvscope {

namespace {

class UniformCodec : public KVCodec {
 public:
  int k_bits = 2, v_bits = 2, group = 32, residual = 128;
  bool pre_rope = false;
  double outliers = 0.0;

  std::string unreachable(const ModelConfig& c) const override {
    const int vg = std::min(group, c.head_dim);
    if (c.head_dim % vg != 0)
      return fmt::format("head_dim {} is not a multiple of the value group {}", c.head_dim, vg);
    if (c.compressed_keys()) return "the model caches compressed keys";
    if (pre_rope && c.rope_scaling.kind == RopeScalingKind::kLongrope)
      return "longrope changes a cached key's rotation with the context; keys cannot be "
             "rotated back";
    return {};
  }

  void encode(const CodecView& v) const override {
    KVCache& kc = *v.cache;
    CodecState& st = *v.state;
    st.sync(kc);
    const ModelConfig& c = *v.config;
    const int hd = kc.head_dim();
    const bool rotate = pre_rope && c.positional == PositionalKind::kRope;
    for (int l = 0; l < kc.n_layers(); ++l) {
      const RopeAngles* rope = v.rope[c.local_rope(l) ? 1 : 0];
      KV_ASSERT(!rotate || rope);
      for (int g = 0; g < kc.n_kv_heads(); ++g) {
        const size_t h = kc.head(l, g);
        const auto pos = kc.positions(l, g);
        // Keys: the raw slots (not merged), oldest first; whole chunks of `residual`.
        std::vector<int> raw;
        for (size_t i = 0; i < pos.size(); ++i)
          if (pos[i] != KVCache::kMerged && st.k[h][i] == 0) raw.push_back(int(i));
        const int chunk = residual > 0 ? residual : group;
        const int due = int(raw.size()) / chunk * chunk;
        for (int s0 = 0; s0 < due; s0 += group)
          key_group(kc, st, l, g, std::span<const int>(raw).subspan(size_t(s0), size_t(group)),
                    rotate ? rope : nullptr, c.rope_layout, v.elem_bytes);
        // Values: raw slots older than the newest `residual`.
        const int32_t vt = st.group(0, value_bytes(hd, v.elem_bytes));
        for (int i = 0; i + residual < int(pos.size()); ++i) {
          if (pos[size_t(i)] == KVCache::kMerged || st.v[h][size_t(i)] != 0) continue;
          value_slot(kc.v_head(l, g) + size_t(i) * hd, hd);
          st.v[h][size_t(i)] = vt;
        }
      }
    }
  }

 private:
  int outlier_count(int entries) const { return int(std::lround(outliers * entries)); }

  // Bytes of one value slot: codes, a scale and minimum (halves) per run, outliers.
  int64_t value_bytes(int hd, int elem_bytes) const {
    const int vg = std::min(group, hd);
    return (int64_t(hd) * v_bits + 7) / 8 + int64_t(hd / vg) * 4 +
           int64_t(outlier_count(hd)) * (elem_bytes + 4);
  }

  void value_slot(float* x, int hd) const {
    const int vg = std::min(group, hd);
    std::vector<uint8_t> exact(static_cast<size_t>(hd), 0);
    flag_largest(x, hd, outlier_count(hd), exact.data());
    for (int r = 0; r < hd; r += vg) quantize_uniform(x + r, vg, 1, v_bits, exact.data() + r);
  }

  void key_group(KVCache& kc, CodecState& st, int l, int g, std::span<const int> slots,
                 const RopeAngles* rope, RopeLayout layout, int elem_bytes) const {
    const int hd = kc.head_dim(), n = int(slots.size());
    const auto pos = kc.positions(l, g);
    std::vector<float> x(size_t(n) * hd);  // [n, hd]
    for (int i = 0; i < n; ++i) {
      float* row = x.data() + size_t(i) * hd;
      std::copy_n(kc.k_head(l, g) + size_t(slots[size_t(i)]) * hd, hd, row);
      if (rope) rope_rotate(row, hd, pos[size_t(slots[size_t(i)])], *rope, layout, true);
    }
    const int n_out = outlier_count(n * hd);
    std::vector<uint8_t> exact(x.size(), 0);
    flag_largest(x.data(), n * hd, n_out, exact.data());
    // One channel at a time: its n entries are hd apart. quantize_uniform's `exact` is
    // indexed like x, so it gets a copy gathered per channel.
    std::vector<uint8_t> ex(static_cast<size_t>(n));
    for (int ch = 0; ch < hd; ++ch) {
      for (int i = 0; i < n; ++i) ex[size_t(i)] = exact[size_t(i) * hd + ch];
      quantize_uniform(x.data() + ch, n, hd, k_bits, ex.data());
    }
    const int64_t member = (int64_t(hd) * k_bits + 7) / 8;
    const int32_t tag = st.group(int64_t(hd) * 4 + int64_t(n_out) * (elem_bytes + 4), member);
    for (int i = 0; i < n; ++i) {
      float* row = x.data() + size_t(i) * hd;
      if (rope) rope_rotate(row, hd, pos[size_t(slots[size_t(i)])], *rope, layout, false);
      std::copy_n(row, hd, kc.k_head(l, g) + size_t(slots[size_t(i)]) * hd);
      st.k[kc.head(l, g)][size_t(slots[size_t(i)])] = tag;
    }
  }
};

}  // namespace

std::shared_ptr<const KVCodec> make_uniform_codec(YamlMap& keys, bool kvquant) {
  auto c = std::make_shared<UniformCodec>();
  const int bits = keys.get_or<int>("bits", kvquant ? 4 : 2);
  c->k_bits = keys.get_or<int>("k_bits", bits);
  c->v_bits = keys.get_or<int>("v_bits", bits);
  for (const char* k : {"bits", "k_bits", "v_bits"})
    KV_CHECK(keys.get_or<int>(k, 4) >= 1 && keys.get_or<int>(k, 4) <= 8,
             "{}: key '{}' must lie in 1..8 bits, got {}", keys.file(), keys.key_path(k),
             keys.get_or<int>(k, 4));
  c->group = keys.get_at_least_or<int>("group", 1, 32);
  c->residual = keys.get_at_least_or<int>("residual", 0, kvquant ? 0 : 128);
  KV_CHECK(c->residual % c->group == 0,
           "{}: key '{}' ({}) must be a multiple of the group ({}): keys are grouped a "
           "residual at a time",
           keys.file(), keys.key_path("residual"), c->residual, c->group);
  c->pre_rope = keys.get_or<bool>("pre_rope", kvquant);
  c->outliers = keys.get_or<double>("outliers", kvquant ? 0.01 : 0.0);
  KV_CHECK(c->outliers >= 0 && c->outliers < 1, "{}: key '{}' must lie in [0, 1), got {}",
           keys.file(), keys.key_path("outliers"), c->outliers);
  return c;
}

}  // namespace kvscope
