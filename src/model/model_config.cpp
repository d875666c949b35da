#include "kvscope/model/model_config.hpp"

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
    KV_CHECK(v <= (int64_t(1) << 24), "{}: model config field '{}' = {} is implausibly large "
             "(limit {})", source, name, v, int64_t(1) << 24);
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
  KV_CHECK(c.norm_eps > 0.0f, "{}: norm eps must be positive, got {}", source, c.norm_eps);
  KV_CHECK(c.rope_theta > 0.0f, "{}: rope_theta must be positive, got {}", source, c.rope_theta);
  KV_CHECK(c.bos_id < c.vocab_size && c.eos_id < c.vocab_size,
           "{}: bos_id {} / eos_id {} outside the vocabulary of {}", source, c.bos_id, c.eos_id,
           c.vocab_size);
  for (int32_t id : c.more_eos_ids)
    KV_CHECK(id >= 0 && id < c.vocab_size, "{}: eos id {} outside the vocabulary of {}", source,
             id, c.vocab_size);
}

}  // namespace kvscope
