// The tokenizer in a GGUF file's metadata, rebuilt in the form its original shipped and
// run by the implementation kvscope already has for that form:
// - "gpt2" (byte-level BPE): the tokenizer.json of the Hugging Face original (same
//   vocabulary, merges, pre-tokenizer regex, special tokens), run by the tokenizer.json
//   implementation that is checked against transformers.js ids;
// - "llama" (SentencePiece BPE: pieces, scores, types): the tokenizer.model it was converted
//   from, as a SentencePiece ModelProto run by libsentencepiece. Its normalizer is what
//   llama.cpp does: no Unicode normalization, spaces escaped as U+2581, a leading one when
//   add_space_prefix, runs of spaces kept.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "kvscope/io/error.hpp"
#include "kvscope/io/json_util.hpp"
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

struct Vocab {
  const json& md;
  std::string src;
  const json& tokens;
  json types;  // [n] llama.cpp's token types (SentencePiece's numbering), or empty

  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
  int type(size_t i) const {
    if (types.empty()) return 1;
    const std::optional<int64_t> t = json_integer(types[i], 1, 6);
    KV_CHECK(t.has_value(), "{}: tokenizer.ggml.token_type[{}] = {} is not a token type (1-6)", src,
             i, json_brief(types[i]));
    return int(*t);
  }
  std::string token(size_t i) const {
    KV_CHECK(tokens[i].is_string(), "{}: token {} is not a string", src, i);
    return tokens[i].get<std::string>();
  }
};

// ---- "gpt2": the original tokenizer.json --------------------------------------------

std::unique_ptr<Tokenizer> gpt2_tokenizer(const Vocab& v) {
  const json& md = v.md;
  const std::string& src = v.src;
  const std::string pre = md.contains("tokenizer.ggml.pre") && md["tokenizer.ggml.pre"].is_string()
                              ? md["tokenizer.ggml.pre"].get<std::string>()
                              : "(none)";
  KV_CHECK(md.contains("tokenizer.ggml.merges") && md["tokenizer.ggml.merges"].is_array(),
           "{}: metadata 'tokenizer.ggml.merges' (an array) is missing", src);
  const json& merges = md["tokenizer.ggml.merges"];
  json j;
  json vocab = json::object();
  json added = json::array();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const std::string t = v.token(i);
    const int type = v.type(i);
    // 3 control, 4 user-defined: matched whole in the text, as tokenizer.json's
    // added_tokens; control tokens are special (they decode to nothing).
    if (type == 3 || type == 4)
      added.push_back({{"id", i},
                       {"content", t},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", type == 3}});
    vocab[t] = i;
  }
  KV_CHECK(vocab.size() == v.tokens.size(), "{}: tokenizer.ggml.tokens repeats a token", src);
  json split;
  bool ignore_merges = false, nfc = false;
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    split = kLlama3Split;
    ignore_merges = true;  // as Llama 3's tokenizer.json
  } else if (pre == "qwen2") {
    split = kQwen2Split;
    nfc = true;  // Qwen's tokenizer.json normalizes to NFC first
  } else if (pre != "gpt-2") {
    throw Error(
        fmt::format("{}: tokenizer.ggml.pre '{}' is not supported (supported: "
                    "llama-bpe, qwen2, gpt-2); pass the model's tokenizer.json with "
                    "--tokenizer",
                    src, pre));
  }
  j["model"] = {{"type", "BPE"},
                {"vocab", vocab},
                {"merges", merges},
                {"ignore_merges", ignore_merges},
                {"byte_fallback", false}};
  j["added_tokens"] = added;
  j["normalizer"] = nfc ? json{{"type", "NFC"}} : json(nullptr);
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", false},
                           {"use_regex", split.is_null()}};
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
  j["post_processor"] = nullptr;
  return hf_tokenizer_from_json(j, src);
}

// ---- "llama": the original tokenizer.model ------------------------------------------

// Protocol buffers wire format, writing only what ModelProto needs.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
}
void put_key(std::string& out, int field, int wire) {
  put_varint(out, uint64_t(field) << 3 | wire);
}
void put_bytes(std::string& out, int field, std::string_view b) {
  put_key(out, field, 2);
  put_varint(out, b.size());
  out.append(b);
}
void put_int(std::string& out, int field, int64_t v) {  // int32 / bool / enum
  put_key(out, field, 0);
  put_varint(out, uint64_t(v));  // negative int32: ten bytes, as protobuf writes them
}
void put_float(std::string& out, int field, float v) {
  put_key(out, field, 5);
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}

std::unique_ptr<Tokenizer> spm_tokenizer(const Vocab& v) {
  const json& md = v.md;
  const std::string& src = v.src;
  KV_CHECK(md.contains("tokenizer.ggml.scores") && md["tokenizer.ggml.scores"].is_array() &&
               md["tokenizer.ggml.scores"].size() == v.tokens.size(),
           "{}: tokenizer.ggml.scores must be an array of one score per token ({})", src,
           v.tokens.size());
  const json& scores = md["tokenizer.ggml.scores"];
  auto flag = [&](const char* k, bool d) {
    if (!md.contains(k)) return d;
    KV_CHECK(md[k].is_boolean(), "{}: metadata '{}' must be a bool, got {}", src, k,
             json_brief(md[k]));
    return md[k].get<bool>();
  };
  // ModelProto: pieces = 1 {piece = 1, score = 2, type = 3}, trainer_spec = 2,
  // normalizer_spec = 3 (sentencepiece_model.proto).
  // The unknown token, as llama.cpp picks it: tokenizer.ggml.unknown_token_id where given
  // (llama.cpp's converter types <unk> CONTROL when a Llama or Mistral checkpoint ships
  // tokenizer.json without tokenizer.model, and records it there), else the token typed
  // unknown (2), else id 0 (llama.cpp's default) unless that is an ordinary piece.
  // SentencePiece needs exactly one piece typed unknown: that one is.
  int64_t unk = -1;
  if (md.contains("tokenizer.ggml.unknown_token_id")) {
    const std::optional<int64_t> id =
        json_integer(md["tokenizer.ggml.unknown_token_id"], 0, int64_t(v.tokens.size()) - 1);
    KV_CHECK(id.has_value(),
             "{}: metadata 'tokenizer.ggml.unknown_token_id' = {} is not a token "
             "id (expected 0..{})",
             src, json_brief(md["tokenizer.ggml.unknown_token_id"]), v.tokens.size() - 1);
    unk = *id;
  }
  for (size_t i = 0; i < v.tokens.size() && unk < 0; ++i)
    if (v.type(i) == 2) unk = int64_t(i);
  if (unk < 0 && !v.tokens.empty() && v.type(0) != 1) unk = 0;
  KV_CHECK(unk >= 0,
           "{}: no unknown token: metadata 'tokenizer.ggml.unknown_token_id' is "
           "absent, no token has type 2 (unknown), and token 0 '{}' is an ordinary piece; a "
           "SentencePiece vocabulary needs one",
           src, v.tokens.empty() ? "" : v.token(0));
  std::string proto;
  std::set<std::string> seen;
  bool bytes = false;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const std::string t = v.token(i);
    KV_CHECK(seen.insert(t).second, "{}: tokenizer.ggml.tokens repeats '{}' (id {})", src, t, i);
    const std::optional<double> score = json_finite(scores[i]);
    KV_CHECK(score && std::isfinite(float(*score)),
             "{}: tokenizer.ggml.scores[{}] must be a "
             "finite number, got {}",
             src, i, json_brief(scores[i]));
    // Another token typed unknown is never produced from text in llama.cpp, as a control
    // piece is not.
    const int type = int64_t(i) == unk ? 2 : v.type(i) == 2 ? 3 : v.type(i);
    bytes |= type == 6;
    std::string piece;
    put_bytes(piece, 1, t);
    put_float(piece, 2, float(*score));
    if (type != 1) put_int(piece, 3, type);
    put_bytes(proto, 1, piece);
  }
  auto piece_of = [&](const char* k, const char* dflt) {
    if (!md.contains(k)) return std::string(dflt);
    const std::optional<int64_t> id = json_integer(md[k], 0, int64_t(v.tokens.size()) - 1);
    KV_CHECK(id.has_value(), "{}: metadata '{}' = {} is not a token id (expected 0..{})", src, k,
             json_brief(md[k]), v.tokens.size() - 1);
    return v.token(size_t(*id));
  };
  std::string trainer;
  put_int(trainer, 3, 2);  // model_type BPE: merge the pair whose result scores highest
  put_int(trainer, 4, int64_t(v.tokens.size()));
  put_int(trainer, 35, bytes);  // byte_fallback: unknown characters as <0xXX> pieces
  put_bytes(trainer, 45, v.token(size_t(unk)));
  put_bytes(trainer, 46, piece_of("tokenizer.ggml.bos_token_id", "<s>"));
  put_bytes(trainer, 47, piece_of("tokenizer.ggml.eos_token_id", "</s>"));
  put_bytes(proto, 2, trainer);
  std::string norm;
  put_bytes(norm, 1, "identity");
  put_int(norm, 3, flag("tokenizer.ggml.add_space_prefix", true));  // add_dummy_prefix
  put_int(norm, 4, 0);  // remove_extra_whitespaces: llama.cpp keeps runs of spaces
  put_int(norm, 5, 1);  // escape_whitespaces
  put_bytes(proto, 3, norm);
  return sentencepiece_tokenizer_from_proto(proto, src);
}

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
  KV_CHECK(model == "gpt2" || model == "llama",
           "{}: tokenizer.ggml.model {} is not supported (supported: \"gpt2\", byte-level BPE; "
           "\"llama\", SentencePiece BPE); pass the model's tokenizer with --tokenizer",
           src, json_brief(model));
  const json& tokens = need("tokenizer.ggml.tokens");
  KV_CHECK(tokens.is_array() && !tokens.empty(),
           "{}: tokenizer.ggml.tokens must be a non-empty array", src);
  const Vocab v{
      md, src, tokens,
      md.contains("tokenizer.ggml.token_type") ? md["tokenizer.ggml.token_type"] : json::array()};
  KV_CHECK(v.types.empty() || (v.types.is_array() && v.types.size() == tokens.size()),
           "{}: tokenizer.ggml.token_type has {} entries for {} tokens", src, v.types.size(),
           tokens.size());
  std::unique_ptr<Tokenizer> tok = model == "gpt2" ? gpt2_tokenizer(v) : spm_tokenizer(v);
  auto id_of = [&](const char* k) -> int32_t {
    if (!md.contains(k)) return -1;
    const std::optional<int64_t> id =
        json_integer(md[k], 0, std::min<int64_t>(int64_t(tokens.size()) - 1, INT32_MAX));
    KV_CHECK(id.has_value(), "{}: metadata '{}' = {} is not a token id (expected 0..{})", src, k,
             json_brief(md[k]), tokens.size() - 1);
    return int32_t(*id);
  };
  const int32_t bos = id_of("tokenizer.ggml.bos_token_id");
  const int32_t eos = id_of("tokenizer.ggml.eos_token_id");
  // llama.cpp's default: SentencePiece vocabularies add BOS, byte-level ones only when told.
  bool add_bos = model == "llama";
  if (md.contains("tokenizer.ggml.add_bos_token")) {
    KV_CHECK(md["tokenizer.ggml.add_bos_token"].is_boolean(),
             "{}: metadata 'tokenizer.ggml.add_bos_token' must be a bool", src);
    add_bos = md["tokenizer.ggml.add_bos_token"].get<bool>();
  }
  KV_CHECK(!add_bos || bos >= 0, "{}: add_bos_token is true but bos_token_id is missing", src);
  tok->bos_id = bos;
  tok->eos_id = eos;
  tok->add_bos = add_bos;
  return tok;
}

}  // namespace kvscope
