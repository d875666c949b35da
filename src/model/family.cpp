#include "kvscope/model/family.hpp"

#include <algorithm>

#include "kvscope/io/error.hpp"

namespace kvscope {

// Defaults of absent keys: each config class's own where it differs from LLaMA's in a way
// that matters (Qwen3Config's head_dim 128, Gemma's 256, Phi3Config's eps 1e-5 and 4096
// positions, Gemma3's rope_theta 1e6, Gemma2's soft-caps 50 / 30), else LLaMA's.
namespace {

// A deque: traits() hands out references that a later register_family() must not move.
std::deque<FamilyTraits>& registry() {
  // One row per family, one column per field of FamilyTraits (Mistral GGUFs say llama).
  // clang-format off
  static std::deque<FamilyTraits> rows = {
   // family           name       HF model_type  HF architecture       GGUF      hd   ctx   eps   theta gemma  qk_norm qkv_b  fused  win caps    base
    {Family::kLlama,   "llama",   "llama",       "LlamaForCausalLM",   "llama",  0,   2048, 1e-6, 1e4, false, false, false, false, 0,  0,  0,  Family::kLlama},
    {Family::kMistral, "mistral", "mistral",     "MistralForCausalLM", "",       0,   2048, 1e-6, 1e4, false, false, false, false, 0,  0,  0,  Family::kMistral},
    {Family::kQwen2,   "qwen2",   "qwen2",       "Qwen2ForCausalLM",   "qwen2",  0,   2048, 1e-6, 1e4, false, false, true,  false, 0,  0,  0,  Family::kQwen2},
    {Family::kQwen3,   "qwen3",   "qwen3",       "Qwen3ForCausalLM",   "qwen3",  128, 2048, 1e-6, 1e4, false, true,  false, false, 0,  0,  0,  Family::kQwen3},
    {Family::kGemma2,  "gemma2",  "gemma2",      "Gemma2ForCausalLM",  "gemma2", 256, 2048, 1e-6, 1e4, true,  false, false, false, 2,  50, 30, Family::kGemma2},
    {Family::kGemma3,  "gemma3",  "gemma3_text", "Gemma3ForCausalLM",  "gemma3", 256, 2048, 1e-6, 1e6, true,  true,  false, false, 6,  0,  0,  Family::kGemma3},
    {Family::kPhi3,    "phi3",    "phi3",        "Phi3ForCausalLM",    "phi3",   0,   4096, 1e-5, 1e4, false, false, false, true,  0,  0,  0,  Family::kPhi3},
  };
  // clang-format on
  return rows;
}

}  // namespace

const std::deque<FamilyTraits>& families() {
  return registry();
}

void register_family(const FamilyTraits& row) {
  std::deque<FamilyTraits>& rows = registry();
  // A built-in row is its own base; a registered one never is.
  const auto builtin = [&](Family f) {
    return std::any_of(rows.begin(), rows.end(),
                       [&](const FamilyTraits& t) { return t.family == f && t.base == f; });
  };
  KV_CHECK(builtin(row.base), "register_family '{}': base {} is not a built-in family",
           row.name ? row.name : "", int(row.base));
  const FamilyTraits& b = traits(row.base);
  KV_CHECK(row.name && *row.name && row.hf_model_type && *row.hf_model_type &&
               row.hf_architecture && row.gguf_arch,
           "register_family: a row needs a name, an HF model_type and architecture, and a GGUF "
           "architecture (\"\" for none)");
  for (const FamilyTraits& t : rows) {
    KV_CHECK(t.family != row.family, "register_family '{}': Family value {} is taken by '{}'",
             row.name, int(row.family), t.name);
    for (const char* n : {row.name, row.hf_model_type, row.gguf_arch})
      KV_CHECK(!*n || (n != std::string_view(t.name) && n != std::string_view(t.hf_model_type) &&
                       n != std::string_view(t.gguf_arch)),
               "register_family '{}': the name '{}' is taken by family '{}'", row.name, n, t.name);
  }
  KV_CHECK(row.head_dim == b.head_dim && row.context == b.context && row.norm_eps == b.norm_eps &&
               row.rope_theta == b.rope_theta && row.gemma == b.gemma && row.qk_norm == b.qk_norm &&
               row.fixed_qkv_bias == b.fixed_qkv_bias && row.fused == b.fused &&
               row.window_pattern == b.window_pattern && row.attn_softcap == b.attn_softcap &&
               row.final_softcap == b.final_softcap,
           "register_family '{}': its defaults and traits must be those of its base '{}' (a "
           "family with maths of its own needs code, not just a row)",
           row.name, b.name);
  rows.push_back(row);
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
