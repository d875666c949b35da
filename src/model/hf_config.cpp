#include "kvscope/model/hf_config.hpp"

#include <cmath>

#include "kvscope/io/error.hpp"

namespace kvscope {

using nlohmann::json;

json rope_scaling_json(const RopeScaling& rs) {
  if (rs.kind == RopeScalingKind::kLinear) return {{"rope_type", "linear"}, {"factor", rs.factor}};
  if (rs.kind == RopeScalingKind::kLongrope)  // phi3: the scale comes from the max positions
    return {{"type", "longrope"},
            {"short_factor", rs.short_factor},
            {"long_factor", rs.long_factor},
            {"attention_factor", rs.attention_factor}};
  if (rs.kind == RopeScalingKind::kFreqFactors)  // not a Hugging Face type: GGUF's tensor
    return {{"rope_type", "freq_factors"}, {"factors", rs.freq_factors}};
  if (rs.kind == RopeScalingKind::kLlama3)
    return {{"rope_type", "llama3"},
            {"factor", rs.factor},
            {"low_freq_factor", rs.low_freq_factor},
            {"high_freq_factor", rs.high_freq_factor},
            {"original_max_position_embeddings", rs.original_max_position}};
  return nullptr;
}

namespace {

// transformers' layer_types: per layer, sliding or full attention.
json layer_types_json(const ModelConfig& c) {
  json types = json::array();
  for (int l = 0; l < c.n_layers; ++l)
    types.push_back(c.window_of(l) > 0 ? "sliding_attention" : "full_attention");
  return types;
}

}  // namespace

json hf_config_json(const ModelConfig& c, DType dtype, bool write_head_dim) {
  json cfg = {{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"hidden_act", "silu"},
              {"hidden_size", c.dim},
              {"intermediate_size", c.hidden_dim},
              {"num_hidden_layers", c.n_layers},
              {"num_attention_heads", c.n_heads},
              {"num_key_value_heads", c.n_kv_heads},
              {"vocab_size", c.vocab_size},
              {"max_position_embeddings", c.max_seq_len},
              {"rms_norm_eps", c.norm_eps},
              {"rope_theta", c.rope_theta},
              {"rope_scaling", nullptr},
              {"tie_word_embeddings", c.tied_embeddings},
              {"bos_token_id", c.bos_id},
              {"eos_token_id", c.eos_id},
              {"torch_dtype", dtype == DType::F32    ? "float32"
                              : dtype == DType::BF16 ? "bfloat16"
                                                     : "float16"}};
  if (!c.more_eos_ids.empty()) {
    json ids = json::array({c.eos_id});
    for (int32_t id : c.more_eos_ids) ids.push_back(id);
    cfg["eos_token_id"] = ids;
  }
  const FamilyTraits& t = traits(c.family);
  cfg["architectures"] = {t.hf_architecture};
  cfg["model_type"] = t.hf_model_type;
  const Family base = base_of(c.family);
  switch (base) {
    case Family::kGemma2:
    case Family::kGemma3: {
      const bool g2 = base == Family::kGemma2;
      KV_CHECK(c.norm_offset == 1.0f && c.sandwich_norms && c.mlp_act == MlpActivation::kGeluTanh &&
                   c.qk_norm == t.qk_norm && !c.mlp_bias && c.qkv_bias == c.o_bias,
               "{} config: Gemma's fixed structure ((1 + w) norms, sandwich norms, GeGLU{}) is "
               "not what the ModelConfig holds",
               t.name, g2 ? "" : ", q/k norms");
      cfg["hidden_act"] = "gelu_pytorch_tanh";
      cfg["hidden_activation"] = "gelu_pytorch_tanh";
      cfg["attention_bias"] = c.qkv_bias;
      cfg["query_pre_attn_scalar"] = std::round(1.0 / (double(c.attn_scale) * c.attn_scale));
      cfg["attn_logit_softcapping"] = c.attn_softcap > 0 ? json(c.attn_softcap) : json(nullptr);
      cfg["final_logit_softcapping"] = c.final_softcap > 0 ? json(c.final_softcap) : json(nullptr);
      cfg["sliding_window"] = c.sliding_window;
      cfg["layer_types"] = layer_types_json(c);
      cfg["cache_implementation"] = "hybrid";
      if (!g2) cfg["rope_local_base_freq"] = c.rope_local_theta;
      break;
    }
    case Family::kPhi3:
      KV_CHECK(!c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm,
               "phi3 config: Phi-3 has no biases and no q/k norms");
      cfg["partial_rotary_factor"] = double(c.rot_dim()) / c.head_dim;
      cfg["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
      cfg["original_max_position_embeddings"] = c.rope_scaling.kind == RopeScalingKind::kLongrope
                                                    ? c.rope_scaling.original_max_position
                                                    : c.max_seq_len;
      break;
    case Family::kQwen2:
      KV_CHECK(c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm,
               "qwen2 config: q/k/v biases are fixed on, o_proj and MLP biases off, no q/k norms");
      break;
    case Family::kQwen3:
      KV_CHECK(c.qk_norm && c.qkv_bias == c.o_bias && !c.mlp_bias,
               "qwen3 config: q/k norms always; attention_bias covers q, k, v and o; no MLP bias");
      cfg["attention_bias"] = c.qkv_bias;
      break;
    case Family::kLlama:
    case Family::kMistral:
      KV_CHECK(c.qkv_bias == c.o_bias && !c.qk_norm,
               "{} config: attention_bias covers q, k, v and o together; no q/k norms", t.name);
      if (c.qkv_bias || c.o_bias || c.mlp_bias) {
        cfg["attention_bias"] = c.qkv_bias;
        cfg["mlp_bias"] = c.mlp_bias;
      }
      if (base == Family::kMistral)
        cfg["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
      break;
  }
  if (base == Family::kQwen2 || base == Family::kQwen3) {
    cfg["use_sliding_window"] = c.sliding_window > 0;
    if (c.sliding_window > 0) {
      cfg["sliding_window"] = c.sliding_window;
      cfg["layer_types"] = layer_types_json(c);
    }
  }
  cfg["rope_scaling"] = rope_scaling_json(c.rope_scaling);
  if (write_head_dim) cfg["head_dim"] = c.head_dim;
  if (c.positional != PositionalKind::kRope)
    cfg["kvscope_positional"] = positional_name(c.positional);
  return cfg;
}

}  // namespace kvscope
