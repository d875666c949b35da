// Hugging Face tokenizer.json with a BPE model: reading the file into the plain pipeline data
// of tokenizer_detail.hpp, the BPE model itself (tokenizers/src/models/bpe/model.rs) and the
// encode/decode flow of tokenizers/src/tokenizer/mod.rs. BOS/EOS come from the
// post_processor and from tokenizer_config.json next to the file.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "kvscope/io/error.hpp"
#include "kvscope/io/json_util.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "tokenizer_detail.hpp"

namespace kvscope {
namespace {

using detail::Decoder;
using detail::Normalizer;
using detail::PreTokenizer;
using nlohmann::json;

// ---- reading JSON with errors that name the file and the key --------------------------

struct JsonFile {
  std::string path;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("HF tokenizer {}: {}", path, what));
  }
  const json& at(const json& obj, const char* key, const std::string& where) const {
    if (!obj.is_object())
      fail(
          fmt::format("{}: expected an object with key '{}', got {}", where, key, json_brief(obj)));
    if (!obj.contains(key)) fail(fmt::format("{}: missing key '{}'", where, key));
    return obj[key];
  }
  // A key that must hold an array (a list of components, ids, ...).
  const json& list(const json& obj, const char* key, const std::string& where) const {
    const json& v = at(obj, key, where);
    if (!v.is_array())
      fail(fmt::format("{}.{}: expected an array, got {}", where, key, json_brief(v)));
    return v;
  }
  std::string str(const json& obj, const char* key, const std::string& where) const {
    const json& v = at(obj, key, where);
    if (!v.is_string())
      fail(fmt::format("{}.{}: expected a string, got {}", where, key, v.type_name()));
    return v.get<std::string>();
  }
  // Optional fields: absent or null gives `def`.
  bool flag(const json& obj, const char* key, const std::string& where, bool def) const {
    if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return def;
    if (!obj[key].is_boolean())
      fail(fmt::format("{}.{}: expected true/false, got {}", where, key, obj[key].type_name()));
    return obj[key].get<bool>();
  }
  size_t count(const json& obj, const char* key, const std::string& where) const {
    const json& v = at(obj, key, where);
    if (!v.is_number_unsigned())
      fail(
          fmt::format("{}.{}: expected a non-negative integer, got {}", where, key, json_brief(v)));
    return v.get<size_t>();
  }
  // One Unicode character, as the `char` fields (replacement, Strip content) require.
  std::string one_char(const json& obj, const char* key, const std::string& where) const {
    std::string s = str(obj, key, where);
    if (s.empty() || detail::utf8_len_at(s, 0) != s.size())
      fail(fmt::format("{}.{}: expected one character, got \"{}\"", where, key, s));
    return s;
  }
  // {"String": s} or {"Regex": r}.
  std::shared_ptr<const detail::Regex> pattern(const json& obj, const std::string& where) const {
    const json& p = at(obj, "pattern", where);
    const bool literal = p.is_object() && p.contains("String");
    if (!literal && !(p.is_object() && p.contains("Regex")))
      fail(fmt::format("{}.pattern: expected {{\"String\": ...}} or {{\"Regex\": ...}}, got {}",
                       where, json_brief(p)));
    const std::string text = str(p, literal ? "String" : "Regex", where + ".pattern");
    std::string error;
    auto re = detail::Regex::compile(text, literal, &error);
    if (!re) fail(fmt::format("{}.pattern \"{}\": {}", where, text, error));
    return re;
  }
  std::string type(const json& obj, const std::string& where) const {
    return str(obj, "type", where);
  }
};

// ---- components ----------------------------------------------------------------------

// Sequences inside Sequences: real files nest at most two; each level is a recursive call.
constexpr int kMaxSequenceDepth = 16;

void check_depth(const JsonFile& f, const std::string& where, int depth) {
  if (depth > kMaxSequenceDepth)
    f.fail(fmt::format("{}: Sequence nested more than {} levels deep", where, kMaxSequenceDepth));
}

void read_normalizer(const JsonFile& f, const json& j, std::vector<Normalizer>& out,
                     int depth = 0) {
  if (j.is_null()) return;
  const std::string type = f.type(j, "normalizer");
  const std::string where = "normalizer " + type;
  check_depth(f, "normalizer", depth);
  if (type == "Sequence") {
    for (const json& sub : f.list(j, "normalizers", where)) read_normalizer(f, sub, out, depth + 1);
  } else if (type == "Prepend") {
    out.push_back({Normalizer::Type::kPrepend, f.str(j, "prepend", where), nullptr, ""});
  } else if (type == "Replace") {
    out.push_back(
        {Normalizer::Type::kReplace, "", f.pattern(j, where), f.str(j, "content", where)});
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    // Unicode normalization forms (Qwen's tokenizer.json uses NFC), from utf8proc's tables.
    Normalizer n{Normalizer::Type::kUnicode, "", nullptr, ""};
    n.form = type == "NFC"    ? Normalizer::Form::kNFC
             : type == "NFD"  ? Normalizer::Form::kNFD
             : type == "NFKC" ? Normalizer::Form::kNFKC
                              : Normalizer::Form::kNFKD;
    out.push_back(n);
  } else {
    // Lowercase/Precompiled/BertNormalizer/... are not implemented.
    f.fail(
        fmt::format("unsupported normalizer type '{}' (supported: Sequence, Prepend, Replace, "
                    "NFC, NFD, NFKC, NFKD)",
                    type));
  }
}

PreTokenizer::Prepend read_prepend_scheme(const JsonFile& f, const json& j,
                                          const std::string& where) {
  // Older files only have add_prefix_space; newer ones prepend_scheme (and maybe both).
  std::optional<PreTokenizer::Prepend> scheme;
  if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
    const std::string s = f.str(j, "prepend_scheme", where);
    if (s == "always") {
      scheme = PreTokenizer::Prepend::kAlways;
    } else if (s == "first") {
      scheme = PreTokenizer::Prepend::kFirst;
    } else if (s == "never") {
      scheme = PreTokenizer::Prepend::kNever;
    } else {
      f.fail(fmt::format("{}.prepend_scheme: expected always/first/never, got \"{}\"", where, s));
    }
  }
  if (!f.flag(j, "add_prefix_space", where, true)) {
    if (scheme && *scheme != PreTokenizer::Prepend::kNever)
      f.fail(fmt::format("{}: add_prefix_space false contradicts prepend_scheme", where));
    scheme = PreTokenizer::Prepend::kNever;
  }
  return scheme.value_or(PreTokenizer::Prepend::kAlways);
}

detail::SplitBehavior read_behavior(const JsonFile& f, const json& j, const std::string& where) {
  const std::string b = f.str(j, "behavior", where);
  if (b == "Removed") return detail::SplitBehavior::kRemoved;
  if (b == "Isolated") return detail::SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return detail::SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return detail::SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return detail::SplitBehavior::kContiguous;
  f.fail(fmt::format("{}.behavior: unknown split behavior \"{}\"", where, b));
}

void read_pre_tokenizer(const JsonFile& f, const json& j, std::vector<PreTokenizer>& out,
                        int depth = 0) {
  if (j.is_null()) return;
  const std::string type = f.type(j, "pre_tokenizer");
  const std::string where = "pre_tokenizer " + type;
  check_depth(f, "pre_tokenizer", depth);
  PreTokenizer p{};
  if (type == "Sequence") {
    for (const json& sub : f.list(j, "pretokenizers", where))
      read_pre_tokenizer(f, sub, out, depth + 1);
    return;
  } else if (type == "Metaspace") {
    p.type = PreTokenizer::Type::kMetaspace;
    p.replacement = f.one_char(j, "replacement", where);
    p.prepend_scheme = read_prepend_scheme(f, j, where);
    p.split = f.flag(j, "split", where, true);
  } else if (type == "ByteLevel") {
    p.type = PreTokenizer::Type::kByteLevel;
    p.add_prefix_space = f.flag(j, "add_prefix_space", where, true);
    p.use_regex = f.flag(j, "use_regex", where, true);
  } else if (type == "Split") {
    p.type = PreTokenizer::Type::kSplit;
    p.pattern = f.pattern(j, where);
    p.behavior = read_behavior(f, j, where);
    p.invert = f.flag(j, "invert", where, false);
  } else {
    f.fail(fmt::format(
        "unsupported pre_tokenizer type '{}' (supported: Sequence, Metaspace, ByteLevel, Split)",
        type));
  }
  out.push_back(std::move(p));
}

void read_decoder(const JsonFile& f, const json& j, std::vector<Decoder>& out, int depth = 0) {
  const std::string type = f.type(j, "decoder");
  const std::string where = "decoder " + type;
  check_depth(f, "decoder", depth);
  Decoder d{};
  if (type == "Sequence") {
    for (const json& sub : f.list(j, "decoders", where)) read_decoder(f, sub, out, depth + 1);
    return;
  } else if (type == "Replace") {
    d.type = Decoder::Type::kReplace;
    d.pattern = f.pattern(j, where);
    d.content = f.str(j, "content", where);
  } else if (type == "ByteFallback") {
    d.type = Decoder::Type::kByteFallback;
  } else if (type == "Fuse") {
    d.type = Decoder::Type::kFuse;
  } else if (type == "Strip") {
    d.type = Decoder::Type::kStrip;
    d.content = f.one_char(j, "content", where);
    d.strip_start = f.count(j, "start", where);
    d.strip_stop = f.count(j, "stop", where);
  } else if (type == "Metaspace") {
    d.type = Decoder::Type::kMetaspace;
    d.replacement = f.one_char(j, "replacement", where);
    d.metaspace_prepends = read_prepend_scheme(f, j, where) != PreTokenizer::Prepend::kNever;
  } else if (type == "ByteLevel") {
    d.type = Decoder::Type::kByteLevel;
  } else {
    f.fail(fmt::format(
        "unsupported decoder type '{}' (supported: Sequence, Replace, ByteFallback, Fuse, Strip, "
        "Metaspace, ByteLevel)",
        type));
  }
  out.push_back(std::move(d));
}

// What the post_processor says about BOS/EOS: the special token before $A (BOS, and the model
// wants it) and after it (EOS).
struct Template {
  std::optional<int32_t> bos, eos;
};

void read_post_processor(const JsonFile& f, const json& j, Template& t, int depth = 0) {
  if (j.is_null()) return;
  const std::string type = f.type(j, "post_processor");
  const std::string where = "post_processor " + type;
  check_depth(f, "post_processor", depth);
  if (type == "Sequence") {
    for (const json& sub : f.list(j, "processors", where))
      read_post_processor(f, sub, t, depth + 1);
  } else if (type == "ByteLevel") {
    // Only trims offsets; adds no tokens.
  } else if (type == "TemplateProcessing") {
    const json& single = f.list(j, "single", where);
    const json& specials = f.at(j, "special_tokens", where);
    bool seen_sequence = false;
    for (const json& item : single) {
      if (item.is_object() && item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      const std::string name = f.str(f.at(item, "SpecialToken", where + ".single"), "id",
                                     where + ".single.SpecialToken");
      const json& ids = f.at(f.at(specials, name.c_str(), where + ".special_tokens"), "ids",
                             where + ".special_tokens." + name);
      const std::optional<int64_t> one =
          ids.is_array() && ids.size() == 1 ? json_integer(ids[0], 0, INT32_MAX) : std::nullopt;
      if (!one)
        f.fail(fmt::format("{}.special_tokens.{}.ids: expected one id (an integer >= 0), got {}",
                           where, name, json_brief(ids)));
      const auto id = int32_t(*one);
      if (!seen_sequence && !t.bos) t.bos = id;
      if (seen_sequence) t.eos = id;
    }
  } else {
    f.fail(fmt::format(
        "unsupported post_processor type '{}' (supported: TemplateProcessing, ByteLevel, "
        "Sequence)",
        type));
  }
}

// ---- the tokenizer ---------------------------------------------------------------------

class HfBpeTokenizer final : public Tokenizer {
 public:
  // read_config: also read tokenizer_config.json beside `path` (not for a tokenizer.json
  // made from other metadata, e.g. a GGUF file's).
  HfBpeTokenizer(const std::filesystem::path& path, const json& j, bool read_config = true)
      : file_{path.string()}, read_config_(read_config) {
    if (!j.is_object()) file_.fail(fmt::format("expected a JSON object, got {}", json_brief(j)));
    if (j.contains("added_tokens") && !j["added_tokens"].is_null() && !j["added_tokens"].is_array())
      file_.fail(
          fmt::format("added_tokens: expected an array, got {}", json_brief(j["added_tokens"])));
    const size_t n_added =
        j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"].size() : 0;
    read_model(file_.at(j, "model", "tokenizer.json"), n_added);
    read_added_tokens(j);
    mark_special();
    read_normalizer(file_, j.value("normalizer", json()), normalizers_);
    read_pre_tokenizer(file_, j.value("pre_tokenizer", json()), pre_tokenizers_);
    has_decoder_ = j.contains("decoder") && !j["decoder"].is_null();
    if (has_decoder_) read_decoder(file_, j["decoder"], decoders_);
    build_matchers();
    read_bos_eos(path, j);
    kind_ = pick_kind();
  }

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int vocab_size() const override { return static_cast<int>(tokens_.size()); }
  std::string piece(int32_t id) const override {
    KV_CHECK(id >= 0 && size_t(id) < tokens_.size(), "{}: token id {} out of range [0, {})",
             file_.path, id, tokens_.size());
    return tokens_[size_t(id)];
  }
  std::string kind() const override { return kind_; }

 private:
  using Cache =
      std::unordered_map<std::string, std::vector<int32_t>, detail::StringHash, std::equal_to<>>;
  struct Added {
    std::string content;
    int32_t id;
    bool special, normalized, single_word, lstrip, rstrip;
  };

  void read_model(const json& m, size_t n_added);
  void read_added_tokens(const json& j);
  bool is_special(int32_t id) const override {
    return id >= 0 && size_t(id) < is_special_.size() && is_special_[size_t(id)];
  }
  void mark_special();
  void build_matchers();
  void read_bos_eos(const std::filesystem::path& path, const json& j);
  std::string pick_kind() const;
  std::optional<int32_t> token_id(const std::string& token) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out, Cache& cache) const;

  JsonFile file_;
  bool read_config_ = true;
  // The BPE model.
  std::unordered_map<std::string, int32_t, detail::StringHash, std::equal_to<>> vocab_;
  detail::PairTable merges_;  // (a, b) -> (rank, merged id)
  std::optional<std::string> unk_token_;
  int32_t unk_id_ = -1;  // -1 also when unk_token_ is not in the vocab (an error once needed)
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  // Added tokens, id -> token text and the matchers that find them in the input.
  std::vector<Added> added_;
  std::vector<std::string> tokens_;  // [vocab_size] token text ("" where no token has the id)
  std::vector<char> has_token_;      // [vocab_size]
  std::vector<char> is_special_;     // [vocab_size] decodes to nothing
  std::unique_ptr<detail::AddedMatcher> raw_matcher_, normalized_matcher_;
  // The pipeline.
  std::vector<Normalizer> normalizers_;
  std::vector<PreTokenizer> pre_tokenizers_;
  std::vector<Decoder> decoders_;
  bool has_decoder_ = false;
  std::string kind_;
};

void HfBpeTokenizer::read_model(const json& m, size_t n_added) {
  const std::string where = "model";
  if (!m.is_object()) file_.fail(fmt::format("model: expected an object, got {}", json_brief(m)));
  const std::string type = m.contains("type") ? file_.type(m, where) : "BPE";
  if (type != "BPE") file_.fail(fmt::format("unsupported model type '{}' (supported: BPE)", type));
  if (m.contains("dropout") && !m["dropout"].is_null() &&
      !(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0))
    file_.fail(fmt::format("model.dropout {}: BPE dropout is random, expected null or 0",
                           json_brief(m["dropout"])));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(key) && !m[key].is_null() && m[key] != "")
      file_.fail(
          fmt::format("model.{} {} is not supported, expected null", key, json_brief(m[key])));
  if (m.contains("unk_token") && !m["unk_token"].is_null())
    unk_token_ = file_.str(m, "unk_token", where);
  fuse_unk_ = file_.flag(m, "fuse_unk", where, false);
  byte_fallback_ = file_.flag(m, "byte_fallback", where, false);
  ignore_merges_ = file_.flag(m, "ignore_merges", where, false);

  const json& vocab = file_.at(m, "vocab", where);
  if (!vocab.is_object()) file_.fail("model.vocab: expected an object {token: id}");
  int32_t max_id = -1;
  // Ids index a table of token strings, so one id of 2^31 would cost gigabytes. Real
  // vocabularies are dense (ids 0..n-1, added tokens right after); allow holes up to twice
  // the number of tokens the file holds.
  const int64_t id_limit = 2 * int64_t(vocab.size() + n_added) + 1024;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      file_.fail(
          fmt::format("model.vocab[\"{}\"]: expected a token id, got {}", token, json_brief(id)));
    if (id.get<int64_t>() >= id_limit)
      file_.fail(
          fmt::format("model.vocab[\"{}\"]: token id {} is far beyond the {} tokens the "
                      "file defines (ids must be below {})",
                      token, json_brief(id), vocab.size() + n_added, id_limit));
    vocab_.emplace(token, id.get<int32_t>());
    max_id = std::max(max_id, id.get<int32_t>());
  }
  tokens_.assign(max_id + 1, "");
  has_token_.assign(max_id + 1, 0);
  for (const auto& [token, id] : vocab_) {
    tokens_[id] = token;
    has_token_[id] = 1;
  }

  if (unk_token_) {
    const auto it = vocab_.find(*unk_token_);
    if (it != vocab_.end()) unk_id_ = it->second;
  }

  const json& merges = file_.at(m, "merges", where);
  if (!merges.is_array()) file_.fail("model.merges: expected an array");
  auto id_of = [&](const std::string& t, size_t rank) {
    const auto it = vocab_.find(t);
    if (it == vocab_.end())
      file_.fail(fmt::format("model.merges[{}]: token \"{}\" is not in the vocab", rank, t));
    return it->second;
  };
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& mj = merges[rank];
    std::string a, b;
    if (mj.is_string()) {  // "a b": exactly one space, as tokenizers' convert_merges_to_hashmap
      const std::string s = mj.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        file_.fail(fmt::format("model.merges[{}]: expected \"left right\", got \"{}\"", rank, s));
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
      a = mj[0].get<std::string>();
      b = mj[1].get<std::string>();
    } else {
      file_.fail(fmt::format("model.merges[{}]: expected \"a b\" or [a, b], got {}", rank,
                             json_brief(mj)));
    }
    // A repeated pair keeps its last rank, like the HashMap that tokenizers collects into.
    const int32_t a_id = id_of(a, rank), b_id = id_of(b, rank), merged = id_of(a + b, rank);
    merges_.insert(a_id, b_id, detail::PairMerge{static_cast<uint32_t>(rank), merged});
  }
}

void HfBpeTokenizer::read_added_tokens(const json& j) {
  if (!j.contains("added_tokens") || j["added_tokens"].is_null()) return;
  const json& arr = j["added_tokens"];
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string where = fmt::format("added_tokens[{}]", i);
    const json& t = arr[i];
    file_.count(t, "id", where);  // must be there, but see below
    Added a{file_.str(t, "content", where),
            -1,
            file_.flag(t, "special", where, false),
            file_.flag(t, "normalized", where, true),
            file_.flag(t, "single_word", where, false),
            file_.flag(t, "lstrip", where, false),
            file_.flag(t, "rstrip", where, false)};
    if (a.content.empty()) continue;  // tokenizers ignores empty added tokens
    // tokenizers does not trust the "id" field (it only warns when they differ): a token
    // already added keeps its id, one in the model's vocab takes that id, and a new one gets
    // the next id after the vocab and the other added tokens (AddedVocabulary::add_tokens).
    // Files written by tokenizers agree with the field; hand-edited ones may not.
    auto same = std::find_if(added_.begin(), added_.end(),
                             [&](const Added& o) { return o.content == a.content; });
    if (same != added_.end()) {
      a.id = same->id;
      *same = a;
      continue;
    }
    if (const auto it = vocab_.find(a.content); it != vocab_.end()) {
      a.id = it->second;
    } else {
      const auto n_vocab = static_cast<int32_t>(vocab_.size());
      int32_t max_added = -1;
      for (const Added& o : added_) max_added = std::max(max_added, o.id);
      a.id = max_added < 0                          ? n_vocab
             : max_added >= n_vocab || n_vocab == 0 ? max_added + 1
                                                    : n_vocab;
    }
    if (static_cast<size_t>(a.id) >= tokens_.size()) {
      tokens_.resize(a.id + 1);
      has_token_.resize(a.id + 1, 0);
    }
    tokens_[a.id] = a.content;  // added tokens take precedence over the model's vocab
    has_token_[a.id] = 1;
    added_.push_back(std::move(a));
  }
}

void HfBpeTokenizer::mark_special() {
  // Special-ness goes by the token's text (AddedVocabulary::is_special_token).
  std::unordered_set<std::string> special;
  for (const Added& a : added_)
    if (a.special) special.insert(a.content);
  is_special_.assign(tokens_.size(), 0);
  for (size_t id = 0; id < tokens_.size(); ++id)
    is_special_[id] = has_token_[id] && special.count(tokens_[id]) > 0;
}

void HfBpeTokenizer::build_matchers() {
  // Tokens with normalized == false are found in the raw text; the others are normalized
  // themselves and found in each normalized piece (AddedVocabulary::refresh_added_tokens).
  // E.g. with a Prepend("▁") normalizer "<|end_story|>" is looked for as "▁<|end_story|>".
  std::vector<detail::AddedPattern> raw, normalized;
  for (const Added& a : added_) {
    detail::AddedPattern p{a.content, a.id, a.single_word, a.lstrip, a.rstrip};
    if (a.normalized) {
      p.content = detail::apply_normalizers(normalizers_, p.content);
      normalized.push_back(std::move(p));
    } else {
      raw.push_back(std::move(p));
    }
  }
  raw_matcher_ = std::make_unique<detail::AddedMatcher>(std::move(raw));
  normalized_matcher_ = std::make_unique<detail::AddedMatcher>(std::move(normalized));
}

std::optional<int32_t> HfBpeTokenizer::token_id(const std::string& token) const {
  for (const Added& a : added_)
    if (a.content == token) return a.id;
  const auto it = vocab_.find(token);
  if (it != vocab_.end()) return it->second;
  return std::nullopt;
}

void HfBpeTokenizer::read_bos_eos(const std::filesystem::path& path, const json& j) {
  Template t;
  read_post_processor(file_, j.value("post_processor", json()), t);
  std::optional<int32_t> bos = t.bos, eos = t.eos;
  bool wants_bos = t.bos.has_value();
  // tokenizer_config.json is what transformers reads; where it names add_bos_token, that wins
  // over the template (LlamaTokenizerFast rebuilds its template from it).
  const auto config_path = path.parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (read_config_ && std::filesystem::exists(config_path, ec)) {
    const JsonFile cf{config_path.string()};
    const json config = parse_json(detail::read_file_bytes(config_path), cf.path);
    if (!config.is_object())
      cf.fail(fmt::format("expected a JSON object, got {}", json_brief(config)));
    auto named = [&](const char* key) -> std::optional<int32_t> {
      if (!config.contains(key) || config[key].is_null()) return std::nullopt;
      const json& v = config[key];
      const std::string token =
          v.is_object() ? cf.str(v, "content", key) : cf.str(config, key, "config");
      const std::optional<int32_t> id = token_id(token);
      if (!id) cf.fail(fmt::format("{} \"{}\" is not a token of {}", key, token, file_.path));
      return id;
    };
    if (!bos) bos = named("bos_token");
    if (auto e = named("eos_token")) eos = e;
    if (config.contains("add_bos_token") && !config["add_bos_token"].is_null())
      wants_bos = cf.flag(config, "add_bos_token", "config", false);
    if (wants_bos && !bos) cf.fail("add_bos_token is true but no bos_token is named");
  }
  bos_id = bos.value_or(-1);
  eos_id = eos.value_or(-1);
  add_bos = wants_bos && bos_id >= 0;
}

std::string HfBpeTokenizer::pick_kind() const {
  for (const PreTokenizer& p : pre_tokenizers_)
    if (p.type == PreTokenizer::Type::kByteLevel) return "hf-bpe-bytelevel";
  for (const Decoder& d : decoders_)
    if (d.type == Decoder::Type::kByteLevel) return "hf-bpe-bytelevel";
  for (const PreTokenizer& p : pre_tokenizers_)
    if (p.type == PreTokenizer::Type::kMetaspace) return "hf-bpe-metaspace";
  for (const Decoder& d : decoders_)
    if (d.type == Decoder::Type::kMetaspace || d.type == Decoder::Type::kByteFallback)
      return "hf-bpe-metaspace";
  for (const Normalizer& n : normalizers_)
    if (n.content == "\xE2\x96\x81" || n.prepend == "\xE2\x96\x81") return "hf-bpe-metaspace";
  return "hf-bpe";
}

// BPE::merge_word for one pre-token, memoised per encode() call like tokenizers' cache
// (which also skips words of 256 bytes or more).
void HfBpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out,
                                 Cache& cache) const {
  constexpr size_t kMaxCachedLength = 256;
  if (ignore_merges_) {
    const auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() < kMaxCachedLength) {
    const auto it = cache.find(word);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  bool pending_unk = false;  // an <unk> not yet added (fuse_unk extends it)
  char byte_piece[7];
  for (size_t i = 0; i < word.size();) {
    const size_t len = detail::utf8_len_at(word, i);
    const std::string_view ch = word.substr(i, len);
    i += len;
    if (const auto it = vocab_.find(ch); it != vocab_.end()) {
      if (pending_unk) ids.push_back(unk_id_);
      pending_unk = false;
      ids.push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      std::vector<int32_t> bytes;
      for (char c : ch) {
        std::snprintf(byte_piece, sizeof(byte_piece), "<0x%02X>", static_cast<uint8_t>(c));
        const auto it = vocab_.find(std::string_view(byte_piece, 6));
        if (it == vocab_.end()) break;
        bytes.push_back(it->second);
      }
      if (bytes.size() == ch.size()) {
        // tokenizers adds these without first flushing a pending <unk>, so the <unk> lands
        // after them; kept for identical ids.
        ids.insert(ids.end(), bytes.begin(), bytes.end());
        continue;
      }
    }
    if (!unk_token_) continue;  // no unk token: tokenizers drops the character silently
    if (unk_id_ < 0)
      file_.fail(fmt::format("model.unk_token \"{}\" is not in the vocab", *unk_token_));
    if (pending_unk && !fuse_unk_) ids.push_back(unk_id_);
    pending_unk = true;
  }
  if (pending_unk) ids.push_back(unk_id_);
  detail::merge_pairs(ids, [&](int32_t a, int32_t b) { return merges_.find(a, b); });
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() < kMaxCachedLength) cache.emplace(std::string(word), std::move(ids));
}

std::vector<int32_t> HfBpeTokenizer::encode(std::string_view text) const {
  if (const std::optional<size_t> bad = detail::find_invalid_utf8(text))
    file_.fail(fmt::format("encode: input text is not valid UTF-8 at byte {}", *bad));
  std::vector<int32_t> out;
  Cache cache;
  // AddedVocabulary::extract_and_normalize, then pre-tokenize and BPE each piece.
  for (const auto& seg : raw_matcher_->split(text)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    const std::string norm = detail::apply_normalizers(
        normalizers_, std::string(text.substr(seg.begin, seg.end - seg.begin)));
    for (const auto& sub : normalized_matcher_->split(norm)) {
      if (sub.id >= 0) {
        out.push_back(sub.id);
        continue;
      }
      detail::Piece piece{norm.substr(sub.begin, sub.end - sub.begin),
                          seg.begin == 0 && sub.begin == 0};
      for (const detail::Piece& w : detail::apply_pre_tokenizers(pre_tokenizers_, std::move(piece)))
        encode_word(w.text, out, cache);
    }
  }
  return out;
}

std::string HfBpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    KV_CHECK(id >= 0 && static_cast<size_t>(id) < tokens_.size(),
             "HF tokenizer {}: token id {} out of range [0, {})", file_.path, id, tokens_.size());
    // Ids without a token (holes in the vocab) decode to nothing, as in tokenizers.
    if (!has_token_[id] || is_special_[id]) continue;
    tokens.push_back(tokens_[id]);
  }
  std::string out;
  if (!has_decoder_) {  // tokenizers joins with spaces when there is no decoder
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const std::string& t : detail::apply_decoders(decoders_, std::move(tokens))) out += t;
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> hf_tokenizer_from_json(const nlohmann::json& j,
                                                  const std::string& source) {
  const JsonFile f{source};
  try {
    return std::make_unique<HfBpeTokenizer>(source, j, false);
  } catch (const json::exception& e) {
    f.fail(fmt::format("a value has the wrong JSON type ({})", e.what()));
  }
}

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json) {
  const JsonFile f{tokenizer_json.string()};
  const json j = parse_json(detail::read_file_bytes(tokenizer_json),
                            "HF tokenizer " + tokenizer_json.string());
  try {
    return std::make_unique<HfBpeTokenizer>(tokenizer_json, j);
  } catch (const json::exception& e) {  // a value of the wrong JSON type the reader missed
    f.fail(fmt::format("a value has the wrong JSON type ({})", e.what()));
  }
}

}  // namespace kvscope
