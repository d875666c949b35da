#include "kvscope/runtime/loaded_model.hpp"

#include "kvscope/io/error.hpp"

namespace kvscope {

namespace fs = std::filesystem;

void check_tokenizer_fits(const Model& m, const Tokenizer& tok, const fs::path& tokenizer_path) {
  // Ids past the model's vocabulary are allowed only for special added tokens (Gemma 3's
  // tokenizer.json adds <image_soft_token> at 262144 to gemma-3-1b's 262144 rows): plain
  // text never produces them, and forward() refuses an id out of range by name.
  int32_t first_bad = -1;
  for (int32_t id = m.config.vocab_size; id < tok.vocab_size() && first_bad < 0; ++id)
    if (!tok.is_special(id)) first_bad = id;
  KV_CHECK(first_bad < 0,
           "{}: the tokenizer has {} tokens but model '{}' ({}) has a vocabulary of {} (token "
           "{} '{}' is past it and not a special token): they do not belong together",
           tokenizer_path.string(), tok.vocab_size(), m.name, m.source.string(),
           m.config.vocab_size, first_bad, first_bad >= 0 ? tok.piece(first_bad) : "");
  // The special ids the model's files state must be special tokens of the tokenizer: a
  // tokenizer from another family may still fit the embedding (Qwen pads its rows to
  // 151,936, more than Llama 3's 128,256 tokens), but not hold the model's <|im_end|>.
  // A GGUF read with its own vocabulary belongs to itself, whatever types its converter
  // gave the special tokens (older ones typed some NORMAL).
  std::error_code ec;
  const bool own_vocabulary = fs::equivalent(tokenizer_path, m.source, ec);
  for (const auto& [key, id] : m.config.stated_special_ids) {
    const bool have = id < tok.vocab_size();
    KV_CHECK(own_vocabulary || (have && tok.is_special(id)),
             "{}: this tokenizer does not belong to model '{}' ({}): the model's {} is {}, "
             "but {}; pass the model's own tokenizer",
             tokenizer_path.string(), m.name, m.source.string(), key, id,
             have ? fmt::format("the tokenizer's token {} is '{}', not a special token", id,
                                tok.piece(id))
                  : fmt::format("the tokenizer has only {} tokens", tok.vocab_size()));
  }
  // A llama2.c checkpoint's classifier rows are its tokenizer's pieces, one for one.
  KV_CHECK(m.format != "llama2c" || tok.vocab_size() == m.config.vocab_size,
           "{}: the tokenizer has {} tokens but the llama2.c checkpoint {} has a vocabulary of "
           "{}: a llama2.c tokenizer must have exactly as many",
           tokenizer_path.string(), tok.vocab_size(), m.source.string(), m.config.vocab_size);
}

LoadedModel load_model_and_tokenizer(const fs::path& model, const fs::path& tokenizer) {
  LoadedModel lm;
  lm.model = load_model(model);
  lm.tokenizer_path = tokenizer.empty() ? find_tokenizer_for(model) : tokenizer;
  lm.tokenizer = load_tokenizer(lm.tokenizer_path);
  check_tokenizer_fits(lm.model, *lm.tokenizer, lm.tokenizer_path);
  return lm;
}

}  // namespace kvscope
