// The model families kvscope computes, one row each (src/model/family.cpp): the name each
// file format gives the family, the defaults its config class takes for absent keys, and
// the traits fixed by the family rather than stated in its files. The loaders, the
// config.json writer and the synthetic writer read this table and `switch` over Family
// instead of comparing names, so a family that needs no new maths is one row. Behaviour
// is decided by a row's `base` (a built-in family: itself for the built-ins), names by the
// row itself, so register_family() adds a family of known maths under new names.
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvscope {

enum class Family { kLlama, kMistral, kQwen2, kQwen3, kGemma2, kGemma3, kPhi3 };

struct FamilyTraits {
  Family family;
  const char* name;             // kvscope's one name: dumps, manifests, tables, messages
  const char* hf_model_type;    // config.json's model_type
  const char* hf_architecture;  // config.json's architectures[0]
  const char* gguf_arch;        // GGUF general.architecture ("" when GGUF files say llama)
  // transformers' config-class defaults for absent keys.
  int head_dim;         // 0: hidden_size / num_attention_heads
  int context;          // max_position_embeddings
  double norm_eps;      // rms_norm_eps
  double rope_theta;    // rope_theta
  bool gemma;           // (1 + w) norms, sqrt(dim) embedding scale, sandwich norms, GeGLU,
                        // classifier tied unless told otherwise, q/k/v/o biases together
  bool qk_norm;         // per-head RMSNorm of Q and K before RoPE (Qwen3, Gemma 3)
  bool fixed_qkv_bias;  // q/k/v biases always, o and MLP never, no config key (Qwen2)
  bool fused;           // fused qkv_proj and gate_up_proj tensors (Phi-3)
  int window_pattern;   // every n-th layer global, the rest sliding (Gemma); 0: none
  double attn_softcap;  // default attention / final logit soft-caps (Gemma 2); 0: none
  double final_softcap;
  Family base;  // the built-in family whose maths, hooks and file conventions it shares
};

// Every row: the built-ins, then the registered ones.
const std::deque<FamilyTraits>& families();
const FamilyTraits& traits(Family f);
inline const char* family_name(Family f) {
  return traits(f).name;
}
// The built-in family whose code paths a family takes (the switches are over these).
inline Family base_of(Family f) {
  return traits(f).base;
}
// Adds a family that needs no maths of its own (a checkpoint format's renamed copy, a
// fork): a new Family value whose `base` is a built-in and whose names are all new; the
// rest of the row is its config defaults and traits, which must equal its base's (they are
// the base's maths). Refused by name otherwise. Not thread-safe: register before loading.
void register_family(const FamilyTraits& row);
// The family of a config.json model_type / a GGUF general.architecture / kvscope's own name
// (a dump's model_type: "gemma3_text" in dumps written before the names were unified).
std::optional<Family> family_from_hf(std::string_view model_type);
std::optional<Family> family_from_gguf(std::string_view arch);
std::optional<Family> family_from_name(std::string_view name);
// "llama, mistral, ..." of the names a format knows, for error messages.
std::string hf_model_types();
std::string gguf_archs();

}  // namespace kvscope
