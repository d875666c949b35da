// Tokenizers: text <-> token ids. encode() never adds BOS/EOS; callers add them as the
// model's files say (Tokenizer::add_bos, bos_id, eos_id).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvscope {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text -> ids, without BOS/EOS.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Ids -> text. Special tokens (BOS/EOS/unk/pad) decode to nothing.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int vocab_size() const = 0;
  // The vocabulary entry of one id as the tokenizer file spells it (Hugging Face's
  // convert_ids_to_tokens): "▁the", "<0x0A>", "Ġthe", "<s>"; "" for an id no token has.
  // Throws for an id outside [0, vocab_size()).
  virtual std::string piece(int32_t id) const = 0;
  // Human-readable kind, e.g. "llama2c", "hf-bpe-metaspace", "hf-bpe-bytelevel",
  // "sentencepiece"; recorded in manifests.
  virtual std::string kind() const = 0;
  // Whether `id` is a special added token (tokenizer.json's added_tokens with "special":
  // true): such ids decode to nothing and plain text does not produce them.
  virtual bool is_special(int32_t id) const { return id == bos_id || id == eos_id; }

  int32_t bos_id = -1;  // -1: the tokenizer has none
  int32_t eos_id = -1;
  bool add_bos = true;  // whether sequences given to the model start with BOS

  // The one BOS rule (docs/experiments.md, "BOS"): the id every sequence made from text
  // starts with, or -1 for none. It follows the tokenizer's own post-processor (its
  // template, or tokenizer_config.json's add_bos_token), as transformers does; a model's
  // `add_bos` key or a command's --bos / --no-bos sets add_bos to say otherwise.
  int32_t sequence_bos() const { return add_bos ? bos_id : -1; }
};

// Overrides the tokenizer's BOS rule (Tokenizer::add_bos); asking for a BOS from a
// tokenizer that has none is an Error naming `where` (the key or flag) and the file.
void set_add_bos(Tokenizer& tok, bool add_bos, const std::string& where,
                 const std::filesystem::path& tokenizer_path);

// Picks the format from the path: a directory or tokenizer.json -> Hugging Face,
// *.model -> SentencePiece, other files -> llama2.c tokenizer.bin. Throws Error naming
// the file on any malformed content.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

// tokenizer.bin holds no vocab size: entries are read to the end of the file.
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path& path);
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json);
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& model);
// A tokenizer.json held in memory (`source` names it in errors); no tokenizer_config.json
// is read.
std::unique_ptr<Tokenizer> hf_tokenizer_from_json(const nlohmann::json& j,
                                                  const std::string& source);
// A serialized SentencePiece ModelProto held in memory (`source` names it in errors).
std::unique_ptr<Tokenizer> sentencepiece_tokenizer_from_proto(const std::string& model_proto,
                                                              const std::string& source);
// The tokenizer in a GGUF file's metadata (tokenizer.ggml.*), as llama.cpp reads it:
// model "gpt2" (byte-level BPE with merges; pre-tokenizer by tokenizer.ggml.pre: "llama-bpe"
// Llama 3, "qwen2", "gpt-2"), model "llama" (SentencePiece BPE: pieces, scores, types,
// add_space_prefix; Llama 2, Mistral, Gemma), special ids and add_bos_token.
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::filesystem::path& gguf);

}  // namespace kvscope
