// The codec registry, the tags that follow slots through eviction, and the encoding
// primitives the codecs share.
#include "kvscope/kv/kv_codec.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvscope/io/error.hpp"
#include "kvscope/model/dtype.hpp"

namespace kvscope {

int32_t CodecState::group(int64_t shared, int64_t member) {
  // Groups with nothing shared differ only by their member bytes: one id serves them all.
  if (shared == 0) {
    const auto it = plain_.find(member);
    if (it != plain_.end()) return it->second;
  }
  groups_.push_back({shared, member});
  if (shared == 0) plain_[member] = int32_t(groups_.size());
  return int32_t(groups_.size());
}

void CodecState::sync(const KVCache& kc) {
  k.resize(size_t(kc.heads())), v.resize(size_t(kc.heads()));
  for (size_t h = 0; h < size_t(kc.heads()); ++h) {
    const size_t u = size_t(kc.used(h));
    if (k[h].size() < u) k[h].resize(u, 0);
    if (v[h].size() < u) v[h].resize(u, 0);
  }
}

void CodecState::follow(const KVCache& kc, int l, int g, std::span<const int> kept) {
  const size_t h = kc.head(l, g);
  if (h >= k.size()) return;  // nothing tagged yet
  const auto pos = kc.positions(l, g);
  for (std::vector<int32_t>* tags : {&k[h], &v[h]}) {
    std::vector<int32_t> next;
    size_t ki = 0;
    for (size_t i = 0; i < pos.size(); ++i)
      if (pos[i] == KVCache::kMerged)
        next.push_back(0);
      else {
        const size_t from = ki < kept.size() ? size_t(kept[ki++]) : tags->size();
        next.push_back(from < tags->size() ? (*tags)[from] : 0);
      }
    *tags = std::move(next);
  }
}

int64_t CodecState::bytes(const KVCache& kc, int elem_bytes) const {
  const int64_t raw = int64_t(kc.head_dim()) * elem_bytes;
  std::vector<uint8_t> seen(groups_.size(), 0);
  int64_t total = 0;
  for (size_t h = 0; h < size_t(kc.heads()); ++h) {
    const size_t u = size_t(kc.used(h));
    for (const std::vector<std::vector<int32_t>>* tags : {&k, &v})
      for (size_t i = 0; i < u; ++i) {
        const int32_t t = h < tags->size() && i < (*tags)[h].size() ? (*tags)[h][i] : 0;
        if (t == 0) {
          total += raw;
          continue;
        }
        const Group& gr = groups_[size_t(t - 1)];
        total += gr.member;
        if (!seen[size_t(t - 1)]) seen[size_t(t - 1)] = 1, total += gr.shared;
      }
  }
  return total;
}

void quantize_uniform(float* x, int n, int stride, int bits, const uint8_t* exact) {
  float lo = INFINITY, hi = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (!exact || !exact[i])
      lo = std::min(lo, x[size_t(i) * stride]), hi = std::max(hi, x[size_t(i) * stride]);
  if (lo > hi) return;  // every entry held exactly
  const int top = (1 << bits) - 1;
  const float scale = f16_to_f32(f32_to_f16((hi - lo) / float(top)));
  const float zero = f16_to_f32(f32_to_f16(lo));
  for (int i = 0; i < n; ++i) {
    if (exact && exact[i]) continue;
    float& e = x[size_t(i) * stride];
    const float code =
        scale > 0.0f ? std::clamp(std::round((e - zero) / scale), 0.0f, float(top)) : 0.0f;
    e = code * scale + zero;
  }
}

void flag_largest(const float* x, int n, int count, uint8_t* flags) {
  std::fill(flags, flags + n, uint8_t(0));
  if (count <= 0) return;
  std::vector<int> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  count = std::min(count, n);
  std::partial_sort(idx.begin(), idx.begin() + count, idx.end(), [&](int a, int b) {
    const float fa = std::fabs(x[a]), fb = std::fabs(x[b]);
    return fa > fb || (fa == fb && a < b);
  });
  for (int i = 0; i < count; ++i) flags[idx[size_t(i)]] = 1;
}

void rope_rotate(float* x, int head_dim, int pos, const RopeAngles& a, RopeLayout layout,
                 bool inverse) {
  KV_ASSERT(pos >= 0 && pos < a.positions && 2 * a.half <= head_dim);
  const float* c = a.cos.data() + size_t(pos) * a.half;
  const float* s = a.sin.data() + size_t(pos) * a.half;
  for (int i = 0; i < a.half; ++i) {
    float* p0 = layout == RopeLayout::kAdjacentPairs ? x + 2 * i : x + i;
    float* p1 = layout == RopeLayout::kAdjacentPairs ? x + 2 * i + 1 : x + i + a.half;
    const float x0 = *p0, x1 = *p1, sn = inverse ? -s[i] : s[i];
    *p0 = x0 * c[i] - x1 * sn;
    *p1 = x0 * sn + x1 * c[i];
  }
}

namespace {

CodecMethod ggml_type(const std::string& t) {
  return {t,
          "quantization",
          "llama.cpp's cache type " + t + " for K and V (ggml's reference quantizer, blocks of 32)",
          false,
          false,
          [t](YamlMap& keys, const CodecContext&, double) { return make_ggml_codec(keys, t, t); }};
}

}  // namespace

const std::vector<CodecMethod>& codec_methods() {
  static const std::vector<CodecMethod> methods = {
      ggml_type("q8_0"),
      ggml_type("q5_1"),
      ggml_type("q5_0"),
      ggml_type("q4_1"),
      ggml_type("q4_0"),
      ggml_type("iq4_nl"),
      {"ggml", "quantization", "llama.cpp's cache types, K and V apart (keys k_type, v_type)",
       false, false,
       [](YamlMap& keys, const CodecContext&, double) {
         return make_ggml_codec(keys, "q8_0", "q8_0");
       }},
      {"kivi", "quantization",
       "KIVI: keys per channel, values per token, asymmetric, recent tokens in full precision",
       false, false,
       [](YamlMap& keys, const CodecContext&, double) { return make_uniform_codec(keys, false); }},
      {"kvquant", "quantization",
       "keys per channel before RoPE, values per token, the largest 1% of entries kept exact",
       false, false,
       [](YamlMap& keys, const CodecContext&, double) { return make_uniform_codec(keys, true); }},
      {"lowrank", "low_rank",
       "Palu: pre-RoPE keys and values of each layer as rank-r latents of calibration bases", true,
       true,
       [](YamlMap& keys, const CodecContext& ctx, double share) {
         return make_lowrank_codec(keys, ctx, share);
       }},
      {"think", "low_rank",
       "ThinK: per head, the key channels with the largest query-weighted magnitude", true, false,
       [](YamlMap& keys, const CodecContext&, double share) {
         return make_think_codec(keys, share);
       }},
  };
  return methods;
}

const CodecMethod* find_codec_method(const std::string& name) {
  for (const CodecMethod& m : codec_methods())
    if (m.name == name) return &m;
  return nullptr;
}

}  // namespace kvscope
