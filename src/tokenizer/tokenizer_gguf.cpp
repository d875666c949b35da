// The tokenizer in a GGUF file's metadata, rebuilt as the tokenizer.json that the Hugging
// Face original ships (same vocabulary, merges, pre-tokenizer regex, special tokens) and run
// by the tokenizer.json implementation: one BPE, checked against transformers.js ids.
#include <set>

#include "kvscope/io/error.hpp"
#include "kvscope/model/gguf.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope {

using nlohmann::json;

namespace {

// The pre-tokenizer splits of the Hugging Face tokenizer.json files these GGUF names stand
// for (llama.cpp's tokenizer.ggml.pre).
const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::filesystem::path& path) {
  const GgufFile g = open_gguf(path);
  const std::string src = path.string() + " (tokenizer.ggml.*)";
  const json& md = g.metadata;
  auto need = [&](const char* k) -> const json& {
    KV_CHECK(md.contains(k), "{}: metadata '{}' is missing", src, k);
    return md[k];
  };
  const json& model = need("tokenizer.ggml.model");
  KV_CHECK(model == "gpt2",
           "{}: tokenizer.ggml.model {} is not supported yet (supported: \"gpt2\", byte-level "
           "BPE); pass the model's tokenizer.json with --tokenizer", src, model.dump());
  const std::string pre = md.contains("tokenizer.ggml.pre") && md["tokenizer.ggml.pre"].is_string()
                              ? md["tokenizer.ggml.pre"].get<std::string>()
                              : "(none)";
  const json& tokens = need("tokenizer.ggml.tokens");
  const json& merges = need("tokenizer.ggml.merges");
  KV_CHECK(tokens.is_array() && merges.is_array(),
           "{}: tokenizer.ggml.tokens and tokenizer.ggml.merges must be arrays", src);
  const json types = md.contains("tokenizer.ggml.token_type") ? md["tokenizer.ggml.token_type"]
                                                              : json::array();
  KV_CHECK(types.empty() || types.size() == tokens.size(),
           "{}: tokenizer.ggml.token_type has {} entries for {} tokens", src, types.size(),
           tokens.size());

  json j;
  json vocab = json::object();
  json added = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    KV_CHECK(tokens[i].is_string(), "{}: token {} is not a string", src, i);
    const std::string t = tokens[i].get<std::string>();
    const int type = types.empty() ? 1 : types[i].get<int>();
    // 3 control, 4 user-defined: matched whole in the text, as tokenizer.json's
    // added_tokens; control tokens are special (they decode to nothing).
    if (type == 3 || type == 4)
      added.push_back({{"id", i}, {"content", t}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", type == 3}});
    vocab[t] = i;
  }
  KV_CHECK(vocab.size() == tokens.size(), "{}: tokenizer.ggml.tokens repeats a token", src);
  json split;
  bool ignore_merges = false, nfc = false;
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    split = kLlama3Split;
    ignore_merges = true;  // as Llama 3's tokenizer.json
  } else if (pre == "qwen2") {
    split = kQwen2Split;
    nfc = true;  // Qwen's tokenizer.json normalizes to NFC first
  } else if (pre != "gpt-2") {
    throw Error(fmt::format("{}: tokenizer.ggml.pre '{}' is not supported (supported: "
                            "llama-bpe, qwen2, gpt-2); pass the model's tokenizer.json with "
                            "--tokenizer", src, pre));
  }
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges},
                {"ignore_merges", ignore_merges}, {"byte_fallback", false}};
  j["added_tokens"] = added;
  j["normalizer"] = nfc ? json{{"type", "NFC"}} : json(nullptr);
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                           {"trim_offsets", false}, {"use_regex", split.is_null()}};
  if (split.is_null())
    j["pre_tokenizer"] = byte_level;
  else
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", json::array({json{{"type", "Split"},
                                                              {"pattern", {{"Regex", split}}},
                                                              {"behavior", "Isolated"},
                                                              {"invert", false}},
                                                         byte_level})}};
  j["decoder"] = byte_level;
  auto id_of = [&](const char* k) -> int32_t {
    if (!md.contains(k)) return -1;
    KV_CHECK(md[k].is_number_integer() && md[k].get<int64_t>() >= 0 &&
                 md[k].get<int64_t>() < int64_t(tokens.size()),
             "{}: metadata '{}' = {} is not a token id (expected 0..{})", src, k, md[k].dump(),
             tokens.size() - 1);
    return md[k].get<int32_t>();
  };
  const int32_t bos = id_of("tokenizer.ggml.bos_token_id");
  const int32_t eos = id_of("tokenizer.ggml.eos_token_id");
  const bool add_bos = md.contains("tokenizer.ggml.add_bos_token") &&
                       md["tokenizer.ggml.add_bos_token"] == true;
  KV_CHECK(!add_bos || bos >= 0, "{}: add_bos_token is true but bos_token_id is missing", src);
  j["post_processor"] = nullptr;
  std::unique_ptr<Tokenizer> tok = hf_tokenizer_from_json(j, src);
  tok->bos_id = bos;
  tok->eos_id = eos;
  tok->add_bos = add_bos;
  return tok;
}

}  // namespace kvscope
