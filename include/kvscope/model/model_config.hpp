// The blueprint of a LLaMA-family model: plain data, no behaviour.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
  kNone,    // default
  kLinear,  // every inverse frequency / factor (position interpolation)
  kLlama3,  // Llama 3.1: low frequencies / factor, high ones kept, a smooth ramp between
};

struct RopeScaling {
  RopeScalingKind kind = RopeScalingKind::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;     // llama3
  double high_freq_factor = 4.0;    // llama3
  int original_max_position = 0;    // llama3: original_max_position_embeddings
};

struct ModelConfig {
  std::string arch = "llama";  // family name, for manifests
  int dim = 0;                 // residual stream width
  int hidden_dim = 0;          // SwiGLU inner width
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
  int32_t eos_id = 2;                // the first end-of-sequence id
  std::vector<int32_t> more_eos_ids;  // further ids that also end a sequence (Llama 3 lists
                                      // several in config.json's eos_token_id)
  // Models whose KV heads were reduced with a RoPE-aware basis (paper A): W_K still
  // projects to k_proj_heads heads, RoPE is applied, and each group of
  // k_proj_heads / n_kv_heads heads is compressed to one cached head (LayerWeights::
  // k_compress); queries are mapped into that basis (LayerWeights::q_project).
  // 0: ordinary model (W_K projects straight to the n_kv_heads cached heads).
  int k_proj_heads = 0;
  // Mistral's sliding window: a query sees only the last `sliding_window` positions (itself
  // included), applied as a mask over the full cache (which is not trimmed to the window).
  // 0: no window.
  int sliding_window = 0;

  int q_dim() const { return n_heads * head_dim; }      // width of Q
  int kv_dim() const { return n_kv_heads * head_dim; }  // width of K and V
  bool compressed_keys() const { return k_proj_heads > 0; }
  int k_proj_dim() const { return (compressed_keys() ? k_proj_heads : n_kv_heads) * head_dim; }
  int group_size() const { return n_heads / n_kv_heads; }  // query heads per KV head
  // Bytes the f32 cache holds per token: K and V of every layer's cached heads.
  int64_t kv_bytes_per_token() const {
    return int64_t(2) * n_layers * n_kv_heads * head_dim * int64_t(sizeof(float));
  }
};

std::string rope_layout_name(RopeLayout l);
std::string rope_scaling_name(RopeScalingKind k);  // "none", "linear", "llama3"

// The head_dim/2 RoPE inverse frequencies of `c` (theta and rope_scaling applied), in
// double: frequency i rotates the pair i of RopeLayout.
std::vector<double> rope_inv_freq(const ModelConfig& c);
std::string positional_name(PositionalKind p);

// Throws Error naming `source` when a field is out of range or inconsistent.
void validate(const ModelConfig& c, const std::string& source);

}  // namespace kvscope
