// The family table (model/family.hpp): one row per enumerator, names that map back to the
// row from every format, and a Gemma 3 named one way whether it came from a Hugging Face
// directory or from a GGUF file.
#include <catch2/catch.hpp>
#include <set>
#include <string>

#include "kvscope/model/family.hpp"

using namespace kvscope;

TEST_CASE("every family has one row and its names lead back to it", "[family]") {
  const Family all[] = {Family::kLlama,  Family::kMistral, Family::kQwen2, Family::kQwen3,
                        Family::kGemma2, Family::kGemma3,  Family::kPhi3};
  CHECK(families().size() == std::size(all));
  std::set<std::string> names, hf, gguf;
  for (Family f : all) {
    const FamilyTraits& t = traits(f);
    CHECK(t.family == f);
    CHECK(names.insert(t.name).second);
    CHECK(hf.insert(t.hf_model_type).second);
    CHECK(family_from_name(t.name) == f);
    CHECK(family_from_hf(t.hf_model_type) == f);
    if (*t.gguf_arch) {
      CHECK(gguf.insert(t.gguf_arch).second);
      CHECK(family_from_gguf(t.gguf_arch) == f);
    }
  }
  // Gemma 3: "gemma3_text" in config.json, "gemma3" in GGUF and in kvscope's own name;
  // dumps written before the names were unified say gemma3_text.
  CHECK(family_from_hf("gemma3_text") == Family::kGemma3);
  CHECK(family_from_gguf("gemma3") == Family::kGemma3);
  CHECK(family_from_name("gemma3_text") == Family::kGemma3);
  CHECK(std::string(family_name(Family::kGemma3)) == "gemma3");
  // The multimodal gemma3 config and a Mistral GGUF name (GGUF says llama) are no rows.
  CHECK_FALSE(family_from_hf("gemma3").has_value());
  CHECK_FALSE(family_from_gguf("mistral").has_value());
  CHECK_FALSE(family_from_hf("gpt2").has_value());
  CHECK(hf_model_types() == "llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3");
  CHECK(gguf_archs() == "llama, qwen2, qwen3, gemma2, gemma3, phi3");
}

TEST_CASE("the defaults of absent config keys are each config class's own", "[family]") {
  // transformers: Qwen3Config head_dim 128; Gemma2Config / Gemma3TextConfig head_dim 256;
  // Phi3Config rms_norm_eps 1e-5 and max_position_embeddings 4096; Gemma3TextConfig
  // rope_theta 1e6; Gemma2Config soft-caps 50 and 30.
  CHECK(traits(Family::kQwen3).head_dim == 128);
  CHECK(traits(Family::kGemma2).head_dim == 256);
  CHECK(traits(Family::kGemma3).head_dim == 256);
  CHECK(traits(Family::kLlama).head_dim == 0);
  CHECK(traits(Family::kPhi3).norm_eps == 1e-5);
  CHECK(traits(Family::kPhi3).context == 4096);
  CHECK(traits(Family::kGemma3).rope_theta == 1e6);
  CHECK(traits(Family::kGemma2).attn_softcap == 50);
  CHECK(traits(Family::kGemma2).final_softcap == 30);
  CHECK(traits(Family::kGemma3).attn_softcap == 0);
}
