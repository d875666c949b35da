// A model with the tokenizer that goes with it, loaded the one way every command and
// experiment does: the model first (so a file kvscope cannot read is named as such), then
// the tokenizer given or found beside it, refused up front when its ids do not fit the
// model's embedding.
#pragma once

#include <filesystem>
#include <memory>

#include "kvscope/model/model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope {

struct LoadedModel {
  Model model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::filesystem::path tokenizer_path;  // the file it was read from
};

// `tokenizer` empty: find_tokenizer_for(model).
LoadedModel load_model_and_tokenizer(const std::filesystem::path& model,
                                     const std::filesystem::path& tokenizer = {});

// Throws Error naming the tokenizer file and both vocabulary sizes when the tokenizer has
// more ids than the model has embedding rows (its ids would index past the embedding),
// and naming the key when a special id the model states (bos/eos/pad:
// ModelConfig::stated_special_ids) is not a special token of the tokenizer.
// A smaller tokenizer is accepted for Hugging Face models, which pad their embedding
// (Qwen2.5: 151,936 rows for 151,665 tokens), but not for llama2.c checkpoints, whose
// vocabulary is their tokenizer's, one for one.
void check_tokenizer_fits(const Model& m, const Tokenizer& tok,
                          const std::filesystem::path& tokenizer_path);

}  // namespace kvscope
