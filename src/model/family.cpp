#include "kvscope/model/family.hpp"

#include "kvscope/io/error.hpp"

namespace kvscope {

// Defaults of absent keys: each config class's own where it differs from LLaMA's in a way
// that matters (Qwen3Config's head_dim 128, Gemma's 256, Phi3Config's eps 1e-5 and 4096
// positions, Gemma3's rope_theta 1e6, Gemma2's soft-caps 50 / 30), else LLaMA's.
const std::vector<FamilyTraits>& families() {
  // One row per family, one column per field of FamilyTraits (Mistral GGUFs say llama).
  // clang-format off
  static const std::vector<FamilyTraits> rows = {
   // family           name       HF model_type  HF architecture       GGUF      hd   ctx   eps   theta gemma  qk_norm qkv_b  fused  win caps
    {Family::kLlama,   "llama",   "llama",       "LlamaForCausalLM",   "llama",  0,   2048, 1e-6, 1e4, false, false, false, false, 0,  0,  0},
    {Family::kMistral, "mistral", "mistral",     "MistralForCausalLM", "",       0,   2048, 1e-6, 1e4, false, false, false, false, 0,  0,  0},
    {Family::kQwen2,   "qwen2",   "qwen2",       "Qwen2ForCausalLM",   "qwen2",  0,   2048, 1e-6, 1e4, false, false, true,  false, 0,  0,  0},
    {Family::kQwen3,   "qwen3",   "qwen3",       "Qwen3ForCausalLM",   "qwen3",  128, 2048, 1e-6, 1e4, false, true,  false, false, 0,  0,  0},
    {Family::kGemma2,  "gemma2",  "gemma2",      "Gemma2ForCausalLM",  "gemma2", 256, 2048, 1e-6, 1e4, true,  false, false, false, 2,  50, 30},
    {Family::kGemma3,  "gemma3",  "gemma3_text", "Gemma3ForCausalLM",  "gemma3", 256, 2048, 1e-6, 1e6, true,  true,  false, false, 6,  0,  0},
    {Family::kPhi3,    "phi3",    "phi3",        "Phi3ForCausalLM",    "phi3",   0,   4096, 1e-5, 1e4, false, false, false, true,  0,  0,  0},
  };
  // clang-format on
  return rows;
}

const FamilyTraits& traits(Family f) {
  for (const FamilyTraits& t : families())
    if (t.family == f) return t;
  KV_ASSERT(false);  // every enumerator has a row
  return families().front();
}

std::optional<Family> family_from_hf(std::string_view model_type) {
  for (const FamilyTraits& t : families())
    if (model_type == t.hf_model_type) return t.family;
  return std::nullopt;
}

std::optional<Family> family_from_gguf(std::string_view arch) {
  for (const FamilyTraits& t : families())
    if (*t.gguf_arch && arch == t.gguf_arch) return t.family;
  return std::nullopt;
}

std::optional<Family> family_from_name(std::string_view name) {
  for (const FamilyTraits& t : families())
    if (name == t.name) return t.family;
  return family_from_hf(name);
}

std::string hf_model_types() {
  std::string s;
  for (const FamilyTraits& t : families())
    s += (s.empty() ? "" : ", ") + std::string(t.hf_model_type);
  return s;
}

std::string gguf_archs() {
  std::string s;
  for (const FamilyTraits& t : families())
    if (*t.gguf_arch) s += (s.empty() ? "" : ", ") + std::string(t.gguf_arch);
  return s;
}

}  // namespace kvscope
