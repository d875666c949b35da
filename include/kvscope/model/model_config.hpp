// The blueprint of a LLaMA-family model: plain data, no behaviour.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kvscope/model/family.hpp"

namespace kvscope {

// How RoPE pairs the dimensions of a head.
enum class RopeLayout {
  kAdjacentPairs,  // llama2.c / Meta original: rotate (x[2i], x[2i+1])
  kRotateHalf,     // Hugging Face: rotate (x[i], x[i + head_dim/2])
};

enum class PositionalKind { kRope, kAlibi, kNone };

// Hugging Face's rope_scaling: how the RoPE inverse frequencies are changed from
// theta^(-2i/d). Positions themselves are never changed.
enum class RopeScalingKind {
  kNone,         // default
  kLinear,       // every inverse frequency / factor (position interpolation)
  kLlama3,       // Llama 3.1: low frequencies / factor, high ones kept, a smooth ramp between
  kLongrope,     // Phi-3: each frequency / its own factor (short_factor, or long_factor once a
                 // call reaches past original_max_position), cos and sin times attention_factor
  kFreqFactors,  // GGUF rope_freqs.weight (llama.cpp's form of Llama 3.1 scaling): each
                 // inverse frequency / its factor in freq_factors
};

// The MLP's gate activation: gate(x) * up(x) with gate = act(W_gate x).
enum class MlpActivation {
  kSilu,      // SwiGLU (llama, mistral, qwen, phi3)
  kGeluTanh,  // GeGLU with the tanh approximation of GELU (gemma's gelu_pytorch_tanh)
};

struct RopeScaling {
  RopeScalingKind kind = RopeScalingKind::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int original_max_position = 0;  // llama3, longrope: original_max_position_embeddings
  std::vector<double> short_factor, long_factor;  // longrope: [rotary_dim/2] each
  double attention_factor = 1.0;                  // longrope: multiplies cos and sin
  std::vector<double> freq_factors;               // freq_factors: [rotary_dim/2]
};

struct ModelConfig {
  Family family = Family::kLlama;  // its row in model/family.hpp (family_name(): its name)
  int dim = 0;                     // residual stream width
  int hidden_dim = 0;              // SwiGLU inner width
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads (GQA when < n_heads)
  int head_dim = 0;    // per-head width (dim / n_heads unless stated)
  int vocab_size = 0;
  int max_seq_len = 0;     // trained context length
  float norm_eps = 1e-5f;  // RMSNorm epsilon
  PositionalKind positional = PositionalKind::kRope;
  RopeLayout rope_layout = RopeLayout::kAdjacentPairs;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tied_embeddings = false;  // classifier shares the token embedding
  // Additive biases (Hugging Face attention_bias / mlp_bias; Qwen2's q/k/v biases). A key
  // bias is added before RoPE, so it is part of both captured keys.
  bool qkv_bias = false;  // q_proj, k_proj, v_proj
  bool o_bias = false;    // o_proj
  bool mlp_bias = false;  // gate_proj, up_proj, down_proj
  // Qwen3: RMSNorm over each head's head_dim of Q and of K (weights q_norm, k_norm
  // [head_dim], shared by the heads, eps norm_eps), after the projection and before RoPE.
  bool qk_norm = false;
  int32_t bos_id = 1;
  int32_t eos_id = 2;                 // the first end-of-sequence id
  std::vector<int32_t> more_eos_ids;  // further ids that also end a sequence (Llama 3 lists
                                      // several in config.json's eos_token_id)
  // The special-token ids the model's own files state, with the key that states each
  // ("bos_token_id", "eos_token_id[1]", "pad_token_id", "tokenizer.ggml.bos_token_id"):
  // a tokenizer must hold each as a special token (check_tokenizer_fits), which catches a
  // tokenizer from another model whose vocabulary happens to fit. Ids taken from defaults
  // are not listed.
  std::vector<std::pair<std::string, int32_t>> stated_special_ids;
  // Models whose KV heads were reduced with a RoPE-aware basis (paper A): W_K still
  // projects to k_proj_heads heads, RoPE is applied, and each group of
  // k_proj_heads / n_kv_heads heads is compressed to one cached head (LayerWeights::
  // k_compress); queries are mapped into that basis (LayerWeights::q_project).
  // 0: ordinary model (W_K projects straight to the n_kv_heads cached heads).
  int k_proj_heads = 0;
  // Mistral's sliding window: a query sees only the last `sliding_window` positions (itself
  // included), applied as a mask; after each forward call the cache of a windowed layer is
  // trimmed to its last `sliding_window` slots (KVCache::trim_windows).
  // 0: no window.
  int sliding_window = 0;
  // Which layers the window applies to (Gemma alternates sliding and global layers):
  // [n_layers] of 0/1, or empty when every layer is windowed.
  std::vector<uint8_t> sliding_layers;
  // Gemma 3: the RoPE base of the sliding layers, which use plain RoPE (no rope_scaling);
  // global layers use rope_theta and rope_scaling. 0: every layer uses rope_theta.
  float rope_local_theta = 0.0f;
  // Partial rotary (Phi-3 partial_rotary_factor): RoPE rotates the first rotary_dim of each
  // head's head_dim (rotate-half within them); the rest pass through. 0: all of head_dim.
  int rotary_dim = 0;
  // Gemma: RMSNorm multiplies by (norm_offset + w) (1 there, 0 elsewhere) -- also the q/k
  // norms; the embedding is multiplied by embed_scale (sqrt(dim) there).
  float norm_offset = 0.0f;
  float embed_scale = 1.0f;
  MlpActivation mlp_act = MlpActivation::kSilu;
  // Attention score scale; 0 means 1/sqrt(head_dim) (Gemma: query_pre_attn_scalar^-1/2).
  float attn_scale = 0.0f;
  // Gemma's sandwich norms: the attention and MLP outputs are RMSNormed (post_attn_norm,
  // post_ffn_norm) before they join the residual stream.
  bool sandwich_norms = false;
  // Gemma 2 soft-capping: scores <- cap * tanh(scores / cap) (after scaling, before the
  // mask), logits likewise with final_softcap. 0: none.
  float attn_softcap = 0.0f;
  float final_softcap = 0.0f;

  int q_dim() const { return n_heads * head_dim; }      // width of Q
  int kv_dim() const { return n_kv_heads * head_dim; }  // width of K and V
  bool compressed_keys() const { return k_proj_heads > 0; }
  int k_proj_dim() const { return (compressed_keys() ? k_proj_heads : n_kv_heads) * head_dim; }
  int group_size() const { return n_heads / n_kv_heads; }  // query heads per KV head
  int rot_dim() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
  float query_scale() const;          // attn_scale, or 1/sqrt(head_dim)
  int window_of(int layer) const;     // the sliding window of `layer`, 0 when it has none
  bool local_rope(int layer) const {  // Gemma 3 sliding layer with its own RoPE base
    return rope_local_theta > 0.0f && window_of(layer) > 0;
  }
  // Bytes the f32 cache holds per token: K and V of every layer's cached heads.
  // The sequence length a key left at 0 means: the model's context, at most
  // kDefaultSeqLenCap tokens. A long-context model's whole context (131,072 for Llama 3.1,
  // 40,960 for Qwen3) would make every default run take hours and gigabytes; a key set to
  // a length goes past the cap (up to the context).
  static constexpr int kDefaultSeqLenCap = 2048;
  int default_seq_len() const {
    return max_seq_len < kDefaultSeqLenCap ? max_seq_len : kDefaultSeqLenCap;
  }

  int64_t kv_bytes_per_token() const {
    return int64_t(2) * n_layers * n_kv_heads * head_dim * int64_t(sizeof(float));
  }
};

std::string rope_layout_name(RopeLayout l);
// "none", "linear", "llama3", "longrope", "freq_factors"
std::string rope_scaling_name(RopeScalingKind k);
std::string mlp_activation_name(MlpActivation a);  // "silu", "gelu_tanh"

// The rot_dim()/2 RoPE inverse frequencies of `layer` of `c` (theta and rope_scaling
// applied; Gemma 3's local base on sliding layers), in double: frequency i rotates the pair
// i of RopeLayout. `long_context`: a longrope call that reaches past
// original_max_position (long_factor instead of short_factor).
std::vector<double> rope_inv_freq(const ModelConfig& c, int layer = 0, bool long_context = false);
// The factor on cos and sin of `layer` (longrope's attention_factor, else 1).
double rope_attention_factor(const ModelConfig& c, int layer = 0);
std::string positional_name(PositionalKind p);

// Throws Error naming `source` when a field is out of range or inconsistent.
void validate(const ModelConfig& c, const std::string& source);

}  // namespace kvscope
