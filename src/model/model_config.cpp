#include "kvscope/model/model_config.hpp"

#include <cmath>

#include "kvscope/io/error.hpp"

namespace kvscope {

std::string rope_layout_name(RopeLayout l) {
  return l == RopeLayout::kAdjacentPairs ? "adjacent_pairs" : "rotate_half";
}

std::string positional_name(PositionalKind p) {
  switch (p) {
    case PositionalKind::kRope:
      return "rope";
    case PositionalKind::kAlibi:
      return "alibi";
    case PositionalKind::kNone:
      return "none";
  }
  return "?";
}

std::string rope_scaling_name(RopeScalingKind k) {
  switch (k) {
    case RopeScalingKind::kNone:
      return "none";
    case RopeScalingKind::kLinear:
      return "linear";
    case RopeScalingKind::kLlama3:
      return "llama3";
    case RopeScalingKind::kLongrope:
      return "longrope";
    case RopeScalingKind::kFreqFactors:
      return "freq_factors";
  }
  return "?";
}

std::string mlp_activation_name(MlpActivation a) {
  return a == MlpActivation::kSilu ? "silu" : "gelu_tanh";
}

float ModelConfig::query_scale() const {
  return attn_scale > 0.0f ? attn_scale : 1.0f / std::sqrt(float(head_dim));
}

int ModelConfig::window_of(int layer) const {
  if (sliding_window == 0) return 0;
  if (sliding_layers.empty()) return sliding_window;
  return sliding_layers[size_t(layer)] ? sliding_window : 0;
}

double rope_attention_factor(const ModelConfig& c, int layer) {
  if (c.local_rope(layer) || c.rope_scaling.kind != RopeScalingKind::kLongrope) return 1.0;
  return c.rope_scaling.attention_factor;
}

std::vector<double> rope_inv_freq(const ModelConfig& c, int layer, bool long_context) {
  const int dim = c.rot_dim(), half = dim / 2;
  // Gemma 3's sliding layers: their own base, no scaling.
  const bool local = c.local_rope(layer);
  const RopeScaling rs = local ? RopeScaling{} : c.rope_scaling;
  const double theta = local ? c.rope_local_theta : c.rope_theta;
  std::vector<double> f(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    const double base = std::pow(theta, -2.0 * i / dim);
    double v = base;
    if (rs.kind == RopeScalingKind::kLongrope)
      v = base / (long_context ? rs.long_factor : rs.short_factor)[size_t(i)];
    if (rs.kind == RopeScalingKind::kLinear) v = base / rs.factor;
    if (rs.kind == RopeScalingKind::kFreqFactors) v = base / rs.freq_factors[size_t(i)];
    if (rs.kind == RopeScalingKind::kLlama3) {
      // transformers' _compute_llama3_parameters: wavelengths longer than
      // original / low_freq_factor are slowed by `factor`, shorter than
      // original / high_freq_factor kept, and those between interpolated linearly in
      // original / wavelength.
      const double wavelen = 2.0 * M_PI / base;
      const double low_wavelen = rs.original_max_position / rs.low_freq_factor;
      const double high_wavelen = rs.original_max_position / rs.high_freq_factor;
      if (wavelen > low_wavelen) {
        v = base / rs.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (rs.original_max_position / wavelen - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        v = (1.0 - smooth) * base / rs.factor + smooth * base;
      }
    }
    f[size_t(i)] = v;
  }
  return f;
}

void validate(const ModelConfig& c, const std::string& source) {
  auto positive = [&](int v, const char* name) {
    KV_CHECK(v > 0, "{}: model config field '{}' must be positive, got {}", source, name, v);
  };
  positive(c.dim, "dim");
  positive(c.hidden_dim, "hidden_dim");
  positive(c.n_layers, "n_layers");
  positive(c.n_heads, "n_heads");
  positive(c.n_kv_heads, "n_kv_heads");
  positive(c.head_dim, "head_dim");
  positive(c.vocab_size, "vocab_size");
  positive(c.max_seq_len, "max_seq_len");
  // Bounds far above any real model (Llama-3's 128K vocabulary and context, 8B's 14336 hidden)
  // that keep every size product of a lying header inside int64.
  auto bounded = [&](int64_t v, const char* name) {
    KV_CHECK(v <= (int64_t(1) << 24),
             "{}: model config field '{}' = {} is implausibly large "
             "(limit {})",
             source, name, v, int64_t(1) << 24);
  };
  bounded(c.dim, "dim");
  bounded(c.hidden_dim, "hidden_dim");
  bounded(c.n_layers, "n_layers");
  bounded(c.n_heads, "n_heads");
  bounded(c.head_dim, "head_dim");
  bounded(c.vocab_size, "vocab_size");
  bounded(c.max_seq_len, "max_seq_len");
  bounded(int64_t(c.n_heads) * c.head_dim, "n_heads x head_dim");
  bounded(c.sliding_window, "sliding_window");
  KV_CHECK(c.sliding_window >= 0, "{}: sliding_window must be >= 0, got {}", source,
           c.sliding_window);
  KV_CHECK(c.n_heads % c.n_kv_heads == 0, "{}: n_heads ({}) must be a multiple of n_kv_heads ({})",
           source, c.n_heads, c.n_kv_heads);
  KV_CHECK(
      c.k_proj_heads == 0 || (c.k_proj_heads >= c.n_kv_heads && c.k_proj_heads % c.n_kv_heads == 0),
      "{}: k_proj_heads ({}) must be a multiple of n_kv_heads ({})", source, c.k_proj_heads,
      c.n_kv_heads);
  KV_CHECK(c.positional != PositionalKind::kRope || c.head_dim % 2 == 0,
           "{}: RoPE needs an even head_dim, got {}", source, c.head_dim);
  KV_CHECK(c.norm_eps > 0.0f && std::isfinite(c.norm_eps),
           "{}: norm eps must be positive and finite, got {}", source, c.norm_eps);
  const RopeScaling& rs = c.rope_scaling;
  if (rs.kind == RopeScalingKind::kLinear || rs.kind == RopeScalingKind::kLlama3)
    KV_CHECK(rs.factor >= 1.0 && rs.factor <= 1e6,
             "{}: rope_scaling factor must be in [1, 1e6], got {}", source, rs.factor);
  if (rs.kind == RopeScalingKind::kLlama3)
    KV_CHECK(rs.original_max_position > 0 && rs.low_freq_factor > 0 &&
                 rs.high_freq_factor > rs.low_freq_factor && std::isfinite(rs.high_freq_factor),
             "{}: llama3 rope_scaling needs original_max_position_embeddings > 0 and "
             "high_freq_factor > low_freq_factor > 0, got {}, {}, {}",
             source, rs.original_max_position, rs.high_freq_factor, rs.low_freq_factor);
  KV_CHECK(c.rope_theta > 0.0f && std::isfinite(c.rope_theta),
           "{}: rope_theta must be positive and finite, got {}", source, c.rope_theta);
  KV_CHECK(c.rotary_dim >= 0 && c.rotary_dim <= c.head_dim && c.rotary_dim % 2 == 0,
           "{}: rotary_dim must be even and in [0, head_dim {}], got {}", source, c.head_dim,
           c.rotary_dim);
  if (rs.kind == RopeScalingKind::kLongrope) {
    const size_t half = size_t(c.rot_dim() / 2);
    KV_CHECK(rs.short_factor.size() == half && rs.long_factor.size() == half,
             "{}: longrope short_factor and long_factor need rotary_dim/2 = {} values each, got "
             "{} and {}",
             source, half, rs.short_factor.size(), rs.long_factor.size());
    for (double v : rs.short_factor)
      KV_CHECK(v > 0 && std::isfinite(v), "{}: longrope short_factor holds {}", source, v);
    for (double v : rs.long_factor)
      KV_CHECK(v > 0 && std::isfinite(v), "{}: longrope long_factor holds {}", source, v);
    KV_CHECK(rs.original_max_position > 0 && rs.attention_factor > 0 &&
                 std::isfinite(rs.attention_factor),
             "{}: longrope needs original_max_position_embeddings > 0 and attention_factor > 0, "
             "got {} and {}",
             source, rs.original_max_position, rs.attention_factor);
  }
  if (rs.kind == RopeScalingKind::kFreqFactors) {
    KV_CHECK(rs.freq_factors.size() == size_t(c.rot_dim() / 2),
             "{}: RoPE freq_factors need "
             "rot_dim/2 = {} values, got {}",
             source, c.rot_dim() / 2, rs.freq_factors.size());
    for (double v : rs.freq_factors)
      KV_CHECK(v > 0 && std::isfinite(v), "{}: RoPE freq_factors hold {}", source, v);
  }
  KV_CHECK(c.sliding_layers.empty() || int(c.sliding_layers.size()) == c.n_layers,
           "{}: sliding layer pattern covers {} layers, the model has {}", source,
           c.sliding_layers.size(), c.n_layers);
  const bool finite = std::isfinite(c.rope_local_theta) && std::isfinite(c.attn_scale) &&
                      std::isfinite(c.attn_softcap) && std::isfinite(c.final_softcap) &&
                      std::isfinite(c.embed_scale);
  KV_CHECK(finite && c.rope_local_theta >= 0.0f && c.attn_scale >= 0.0f && c.attn_softcap >= 0.0f &&
               c.final_softcap >= 0.0f && c.embed_scale > 0.0f,
           "{}: rope_local_theta ({}), attention scale ({}) and soft-caps ({}, {}) must be "
           "finite and >= 0, and the embedding scale ({}) > 0",
           source, c.rope_local_theta, c.attn_scale, c.attn_softcap, c.final_softcap,
           c.embed_scale);
  KV_CHECK(c.bos_id >= 0 && c.eos_id >= 0 && c.bos_id < c.vocab_size && c.eos_id < c.vocab_size,
           "{}: bos_id {} / eos_id {} outside the vocabulary of {}", source, c.bos_id, c.eos_id,
           c.vocab_size);
  for (int32_t id : c.more_eos_ids)
    KV_CHECK(id >= 0 && id < c.vocab_size, "{}: eos id {} outside the vocabulary of {}", source, id,
             c.vocab_size);
}

}  // namespace kvscope
