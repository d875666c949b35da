// A low-rank cache (after Palu, Chang et al. 2024): the pre-RoPE keys and the values of
// each group of `heads` KV heads of a layer (0: all of the layer's, Palu's joint
// decomposition; 1: per head) are held as rank-r latents z = B x on a basis B [r, m]
// (m = heads * head_dim): the top r eigenvectors of the group's block of the calibration
// Gram of pre-RoPE keys (values: of values), paper A's SVD-a Grams. Reading the cache
// reconstructs x = B^T z and rotates the keys by their positions. r = round(share * m).
// Bytes: r elements per token, group and tensor while any of the group's heads keeps the
// token; the bases (2 r m elements per group and layer) are side bytes.
#include <fmt/format.h>

#include <cmath>

#include "kvscope/io/error.hpp"
#include "kvscope/kv/kv_codec.hpp"
#include "kvscope/kv/kv_reduction.hpp"

namespace kvscope {

namespace {

class LowRankCodec : public KVCodec {
 public:
  int heads = 0;  // per latent (resolved: divides n_kv_heads)
  int rank = 0, m = 0, n_layers = 0;
  bool rotate = true;
  // [layer][group]: B_k, B_v [rank, m] row-major
  std::vector<std::vector<std::vector<double>>> bk, bv;

  std::string unreachable(const ModelConfig& c) const override {
    if (c.compressed_keys()) return "the model caches compressed keys";
    if (c.rope_scaling.kind == RopeScalingKind::kLongrope)
      return "longrope changes a cached key's rotation with the context";
    return {};
  }
  bool per_head() const override { return heads == 1; }
  int64_t side_bytes(int elem_bytes) const override {
    int64_t groups = 0;
    for (const auto& layer : bk) groups += int64_t(layer.size());
    return groups * 2 * rank * m * elem_bytes;
  }

  void encode(const CodecView& v) const override {
    KVCache& kc = *v.cache;
    CodecState& st = *v.state;
    st.sync(kc);
    const ModelConfig& c = *v.config;
    const int hd = kc.head_dim();
    std::vector<double> x(static_cast<size_t>(m)), z(static_cast<size_t>(rank));
    for (int l = 0; l < kc.n_layers(); ++l) {
      const RopeAngles* rope = rotate ? v.rope[c.local_rope(l) ? 1 : 0] : nullptr;
      for (int j = 0; j < kc.n_kv_heads() / heads; ++j) {
        const int g0 = j * heads;
        const size_t h0 = kc.head(l, g0);
        const auto pos = kc.positions(l, g0);
        for (int g = g0 + 1; g < g0 + heads; ++g)
          KV_ASSERT(kc.used(l, g) == int(pos.size()));  // per_head() keeps eviction away
        for (size_t i = 0; i < pos.size(); ++i) {
          if (pos[i] == KVCache::kMerged || st.k[h0][i] != 0) continue;
          for (int tensor = 0; tensor < 2; ++tensor) {
            const std::vector<double>& B = (tensor == 0 ? bk : bv)[size_t(l)][size_t(j)];
            std::vector<float> row(static_cast<size_t>(hd));
            for (int g = g0; g < g0 + heads; ++g) {
              const float* src = (tensor == 0 ? kc.k_head(l, g) : kc.v_head(l, g)) + i * hd;
              std::copy_n(src, hd, row.begin());
              if (tensor == 0 && rope)
                rope_rotate(row.data(), hd, pos[i], *rope, c.rope_layout, true);
              for (int e = 0; e < hd; ++e) x[size_t((g - g0) * hd + e)] = row[size_t(e)];
            }
            for (int a = 0; a < rank; ++a) {  // z = B x
              double acc = 0.0;
              for (int e = 0; e < m; ++e) acc += B[size_t(a) * m + e] * x[size_t(e)];
              z[size_t(a)] = acc;
            }
            for (int g = g0; g < g0 + heads; ++g) {  // x = B^T z, rotated again
              for (int e = 0; e < hd; ++e) {
                double acc = 0.0;
                const int col = (g - g0) * hd + e;
                for (int a = 0; a < rank; ++a) acc += B[size_t(a) * m + col] * z[size_t(a)];
                row[size_t(e)] = float(acc);
              }
              if (tensor == 0 && rope)
                rope_rotate(row.data(), hd, pos[i], *rope, c.rope_layout, false);
              std::copy_n(row.begin(), hd,
                          (tensor == 0 ? kc.k_head(l, g) : kc.v_head(l, g)) + i * hd);
            }
          }
          const int32_t kt = st.group(int64_t(rank) * v.elem_bytes, 0),
                        vt = st.group(int64_t(rank) * v.elem_bytes, 0);
          for (int g = g0; g < g0 + heads; ++g)
            st.k[kc.head(l, g)][i] = kt, st.v[kc.head(l, g)][i] = vt;
        }
      }
    }
  }
};

}  // namespace

std::shared_ptr<const KVCodec> make_lowrank_codec(YamlMap& keys, const CodecContext& ctx,
                                                  double share) {
  auto codec = std::make_shared<LowRankCodec>();
  codec->heads = keys.get_at_least_or<int>("heads", 0, 0);
  if (!ctx.model) return codec;
  const ModelConfig& c = ctx.model->config;
  if (codec->heads == 0) codec->heads = c.n_kv_heads;
  KV_CHECK(c.n_kv_heads % codec->heads == 0,
           "{}: key '{}' is {}, which does not divide model '{}''s {} KV heads", keys.file(),
           keys.key_path("heads"), codec->heads, ctx.model->name, c.n_kv_heads);
  KV_CHECK(ctx.grams, "low-rank cache: no calibration Grams (kv_frontier.calibration)");
  codec->m = codec->heads * c.head_dim;
  codec->rank = std::clamp(int(std::lround(share * codec->m)), 1, codec->m);
  codec->n_layers = c.n_layers;
  codec->rotate = c.positional == PositionalKind::kRope;
  codec->bk.resize(size_t(c.n_layers)), codec->bv.resize(size_t(c.n_layers));
  CalibrationGrams& grams = *ctx.grams;
  for (int l = 0; l < c.n_layers; ++l)
    for (int j = 0; j < c.n_kv_heads / codec->heads; ++j) {
      codec->bk[size_t(l)].push_back(group_basis(
          grams.at(l, "k_pre_rope").block(j * codec->m, codec->m, false), codec->m, codec->rank));
      codec->bv[size_t(l)].push_back(group_basis(
          grams.at(l, "v").block(j * codec->m, codec->m, false), codec->m, codec->rank));
    }
  return codec;
}

}  // namespace kvscope
