// The Hugging Face tokenizer.json pipeline steps as plain functions over plain data: PCRE2
// regexes, added-token matching, normalizers, pre-tokenizers and decoders. Each follows the
// Rust source of huggingface/tokenizers (named beside it) so that ids and decoded text match
// the reference implementation, including its quirks, which are called out where they occur.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

#include "kvscope/io/error.hpp"
#include "tokenizer_detail.hpp"

namespace kvscope::detail {

// ---- Regex -------------------------------------------------------------------------

namespace {

pcre2_code* as_code(void* p) {
  return static_cast<pcre2_code*>(p);
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

// JIT matching of patterns like `\s+(?!\S)` over long whitespace runs can overflow PCRE2's
// default 32 KiB JIT stack, so each thread gets a larger one once.
struct MatchScratch {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchScratch() {
    if (stack) pcre2_jit_stack_free(stack);
    if (context) pcre2_match_context_free(context);
  }
};

pcre2_match_context* match_context() {
  thread_local MatchScratch scratch;
  return scratch.context;
}

}  // namespace

std::shared_ptr<const Regex> Regex::compile(std::string_view pattern, bool literal,
                                            std::string* error) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  // PCRE2 refuses UCP together with LITERAL; a literal needs no character classes anyway.
  const uint32_t options = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &err, &err_offset, nullptr);
  if (!code) {
    *error = pcre2_message(err) + " at offset " + std::to_string(err_offset);
    return nullptr;
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional: the interpreter is the fallback
  std::shared_ptr<Regex> re(new Regex());
  re->code_ = code;
  return re;
}

Regex::~Regex() {
  pcre2_code_free(as_code(code_));
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view s) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(as_code(code_), nullptr);
  KV_ASSERT(md != nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  // The onig crate's FindMatches: an empty match right where the previous match ended is
  // skipped by moving the search on one code point.
  size_t last_end = 0;
  std::optional<size_t> last_match_end;
  while (last_end <= s.size()) {
    const int rc = pcre2_match(as_code(code_), subject, s.size(), last_end, PCRE2_NO_UTF_CHECK, md,
                               match_context());
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      throw Error("tokenizer regex match failed: " + pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (b == e && last_match_end == e) {
      last_end += last_end < s.size() ? utf8_len_at(s, last_end) : 1;
      continue;
    }
    last_end = e;
    last_match_end = e;
    out.emplace_back(b, e);
  }
  pcre2_match_data_free(md);
  return out;
}

std::string Regex::replace_all(std::string_view s, std::string_view content) const {
  std::string out;
  size_t prev = 0;
  for (const auto& [b, e] : find_all(s)) {
    out.append(s.substr(prev, b - prev));
    out.append(content);
    prev = e;
  }
  out.append(s.substr(prev));
  return out;
}

// ---- splitting by matches (tokenizers/src/tokenizer/normalizer.rs, NormalizedString::split)

namespace {

struct Span {
  size_t begin, end;
  bool is_match;
};

// Pattern::find_matches: matches and the gaps between them, covering the whole string.
std::vector<Span> cover(std::string_view s, const std::vector<std::pair<size_t, size_t>>& matches) {
  std::vector<Span> out;
  if (s.empty()) return {{0, 0, false}};
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) out.push_back({prev, b, false});
    out.push_back({b, e, true});
    prev = e;
  }
  if (prev != s.size()) out.push_back({prev, s.size(), false});
  return out;
}

// The SplitDelimiterBehavior folds; returns the kept [begin, end) ranges.
std::vector<std::pair<size_t, size_t>> split_ranges(std::vector<Span> spans,
                                                    SplitBehavior behavior) {
  std::vector<std::pair<size_t, size_t>> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& sp : spans) out.emplace_back(sp.begin, sp.end);
      break;
    case SplitBehavior::kRemoved:
      for (const Span& sp : spans)
        if (!sp.is_match) out.emplace_back(sp.begin, sp.end);
      break;
    case SplitBehavior::kContiguous:
      for (const Span& sp : spans) {
        if (sp.is_match == previous_match && !out.empty()) {
          out.back().second = sp.end;
        } else {
          out.emplace_back(sp.begin, sp.end);
        }
        previous_match = sp.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& sp : spans) {
        if (sp.is_match && !previous_match && !out.empty()) {
          out.back().second = sp.end;
        } else {
          out.emplace_back(sp.begin, sp.end);
        }
        previous_match = sp.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first = it->begin;
        } else {
          out.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  return out;
}

// Appends the non-empty pieces of `piece` cut at `ranges` (PreTokenizedString::split drops
// empty splits).
void append_pieces(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& ranges,
                   std::vector<Piece>& out) {
  for (const auto& [b, e] : ranges) {
    if (b == e) continue;
    out.push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
  }
}

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

const Regex& gpt2_regex() {
  static const std::shared_ptr<const Regex> re = [] {
    std::string error;
    auto r = Regex::compile(kGpt2Pattern, false, &error);
    KV_ASSERT(r != nullptr);
    return r;
  }();
  return *re;
}

}  // namespace

// ---- the byte-level alphabet (tokenizers/src/pre_tokenizers/byte_level.rs, bytes_char) ---

namespace {

struct ByteLevelTable {
  std::vector<std::string> chars = std::vector<std::string>(256);
  std::vector<int> byte_of = std::vector<int>(512, -1);  // code point -> byte
  ByteLevelTable() {
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp =
          printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      utf8_append(chars[b], cp);
      byte_of[cp] = b;
    }
  }
};

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

}  // namespace

const std::vector<std::string>& byte_level_chars() {
  return byte_level_table().chars;
}

int byte_level_byte(char32_t cp) {
  const auto& t = byte_level_table();
  return cp < t.byte_of.size() ? t.byte_of[cp] : -1;
}

// ---- added tokens (tokenizers/src/tokenizer/added_vocabulary.rs, find_matches) --------

AddedMatcher::AddedMatcher(std::vector<AddedPattern> patterns)
    : patterns_(std::move(patterns)), by_first_byte_(256) {
  bool any_single_word = false;
  for (size_t i = 0; i < patterns_.size(); ++i) {
    if (patterns_[i].content.empty()) continue;
    by_first_byte_[static_cast<uint8_t>(patterns_[i].content[0])].push_back(
        static_cast<int32_t>(i));
    any_single_word |= patterns_[i].single_word;
  }
  // Longest first: the first pattern that matches at a position is the leftmost-longest.
  for (auto& v : by_first_byte_)
    std::stable_sort(v.begin(), v.end(), [&](int32_t a, int32_t b) {
      return patterns_[a].content.size() > patterns_[b].content.size();
    });
  if (any_single_word) {
    // Rust regex's Unicode \w, approximated by PCRE2's UCP \w (letters, digits, '_').
    std::string error;
    word_start_ = Regex::compile(R"(\A\w)", false, &error);
    word_end_ = Regex::compile(R"(\w\z)", false, &error);
    KV_ASSERT(word_start_ && word_end_);
  }
}

std::vector<AddedMatcher::Segment> AddedMatcher::split(std::string_view s) const {
  std::vector<Segment> out;
  size_t start_offset = 0;  // end of the previous emitted token
  size_t pos = 0;           // where the search resumes (aho-corasick's find_iter)
  while (pos < s.size()) {
    size_t b = pos;
    const AddedPattern* hit = nullptr;
    for (; b < s.size(); ++b) {
      for (int32_t idx : by_first_byte_[static_cast<uint8_t>(s[b])]) {
        const std::string& c = patterns_[idx].content;
        if (s.compare(b, c.size(), c) == 0) {
          hit = &patterns_[idx];
          break;
        }
      }
      if (hit) break;
    }
    if (!hit) break;
    size_t start = b, stop = b + hit->content.size();
    pos = stop;
    if (hit->single_word) {
      size_t before = start > 0 ? start - 1 : 0;  // the code point just before the match
      while (before > 0 && (static_cast<uint8_t>(s[before]) & 0xC0) == 0x80) --before;
      const bool start_space =
          start == 0 || !word_end_->matches_somewhere(s.substr(before, start - before));
      const bool stop_space =
          stop == s.size() || !word_start_->matches_somewhere(s.substr(stop, utf8_len_at(s, stop)));
      if (!start_space || !stop_space) continue;  // not a single word: leave it to the model
    }
    if (hit->lstrip) {
      size_t ws = start;
      while (ws > 0) {
        size_t cb = ws - 1;
        while (cb > 0 && (static_cast<uint8_t>(s[cb]) & 0xC0) == 0x80) --cb;
        if (!is_unicode_whitespace(utf8_decode_at(s, cb))) break;
        ws = cb;
      }
      start = std::max(ws, start_offset);
    }
    if (hit->rstrip) {
      while (stop < s.size() && is_unicode_whitespace(utf8_decode_at(s, stop)))
        stop += utf8_len_at(s, stop);
      // HF resumes the search at the unstripped end; resuming after the stripped spaces
      // differs only for added tokens that themselves start with whitespace.
      pos = stop;
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, hit->id});
    start_offset = stop;
  }
  if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
  return out;
}

// ---- normalizers -----------------------------------------------------------------------

// NFC / NFD / NFKC / NFKD of UTF-8 text (utf8proc; the Rust crate uses the same Unicode
// algorithm, so only characters newer than either table could differ).
std::string unicode_normalize(const std::string& s, Normalizer::Form form) {
  if (s.empty()) return s;
  int options = UTF8PROC_STABLE;
  switch (form) {
    case Normalizer::Form::kNFC:
      options |= UTF8PROC_COMPOSE;
      break;
    case Normalizer::Form::kNFD:
      options |= UTF8PROC_DECOMPOSE;
      break;
    case Normalizer::Form::kNFKC:
      options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case Normalizer::Form::kNFKD:
      options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
  }
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()),
                   &out, utf8proc_option_t(options));
  if (n < 0)
    throw Error(
        fmt::format("Unicode normalization of the text failed: {} (the text is not valid "
                    "UTF-8?)",
                    utf8proc_errmsg(n)));
  std::string r(reinterpret_cast<const char*>(out), size_t(n));
  std::free(out);
  return r;
}

std::string apply_normalizers(const std::vector<Normalizer>& normalizers, std::string s) {
  for (const Normalizer& n : normalizers) {
    switch (n.type) {
      case Normalizer::Type::kPrepend:  // normalizers/prepend.rs: only non-empty strings
        if (!s.empty()) s = n.prepend + s;
        break;
      case Normalizer::Type::kReplace:  // normalizers/replace.rs
        s = n.pattern->replace_all(s, n.content);
        break;
      case Normalizer::Type::kUnicode:  // normalizers/unicode.rs
        s = unicode_normalize(s, n.form);
        break;
    }
  }
  return s;
}

// ---- pre-tokenizers --------------------------------------------------------------------

namespace {

// pre_tokenizers/metaspace.rs
void metaspace(const PreTokenizer& p, const Piece& in, std::vector<Piece>& out) {
  static const std::shared_ptr<const Regex> space = [] {
    std::string error;
    return Regex::compile(" ", true, &error);
  }();
  Piece piece{space->replace_all(in.text, p.replacement), in.at_start};
  const bool starts = piece.text.compare(0, p.replacement.size(), p.replacement) == 0;
  if (!starts && (p.prepend_scheme == PreTokenizer::Prepend::kAlways ||
                  (p.prepend_scheme == PreTokenizer::Prepend::kFirst && piece.at_start)))
    piece.text = p.replacement + piece.text;
  if (!p.split) {
    if (!piece.text.empty()) out.push_back(std::move(piece));
    return;
  }
  std::vector<std::pair<size_t, size_t>> matches;
  for (size_t i = piece.text.find(p.replacement); i != std::string::npos;
       i = piece.text.find(p.replacement, i + p.replacement.size()))
    matches.emplace_back(i, i + p.replacement.size());
  append_pieces(piece, split_ranges(cover(piece.text, matches), SplitBehavior::kMergedWithNext),
                out);
}

// pre_tokenizers/byte_level.rs: optional prefix space, GPT-2 regex split, then every byte
// becomes its printable stand-in character.
void byte_level(const PreTokenizer& p, const Piece& in, std::vector<Piece>& out) {
  Piece piece = in;
  if (p.add_prefix_space && (piece.text.empty() || piece.text[0] != ' '))
    piece.text = " " + piece.text;
  std::vector<Piece> split;
  if (p.use_regex) {
    append_pieces(piece,
                  split_ranges(cover(piece.text, gpt2_regex().find_all(piece.text)),
                               SplitBehavior::kIsolated),
                  split);
  } else if (!piece.text.empty()) {
    split.push_back(std::move(piece));
  }
  const auto& chars = byte_level_chars();
  for (Piece& sp : split) {
    std::string mapped;
    mapped.reserve(sp.text.size() * 2);
    for (char c : sp.text) mapped += chars[static_cast<uint8_t>(c)];
    out.push_back({std::move(mapped), sp.at_start});
  }
}

// pre_tokenizers/split.rs
void split(const PreTokenizer& p, const Piece& in, std::vector<Piece>& out) {
  std::vector<Span> spans = cover(in.text, p.pattern->find_all(in.text));
  if (p.invert)
    for (Span& sp : spans) sp.is_match = !sp.is_match;
  append_pieces(in, split_ranges(std::move(spans), p.behavior), out);
}

}  // namespace

std::vector<Piece> apply_pre_tokenizers(const std::vector<PreTokenizer>& pre, Piece piece) {
  std::vector<Piece> pieces;
  if (!piece.text.empty()) pieces.push_back(std::move(piece));
  for (const PreTokenizer& p : pre) {
    std::vector<Piece> next;
    for (const Piece& in : pieces) {
      switch (p.type) {
        case PreTokenizer::Type::kMetaspace:
          metaspace(p, in, next);
          break;
        case PreTokenizer::Type::kByteLevel:
          byte_level(p, in, next);
          break;
        case PreTokenizer::Type::kSplit:
          split(p, in, next);
          break;
      }
    }
    pieces = std::move(next);
  }
  return pieces;
}

// ---- decoders ----------------------------------------------------------------------

namespace {

// decoders/byte_fallback.rs: runs of <0xHH> tokens become their bytes when those form valid
// UTF-8, else one U+FFFD per byte token.
std::vector<std::string> byte_fallback(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string bytes;
  size_t n_bytes = 0;
  auto flush = [&] {
    if (n_bytes == 0) return;
    if (!find_invalid_utf8(bytes)) {
      out.push_back(bytes);
    } else {
      for (size_t i = 0; i < n_bytes; ++i) out.emplace_back("\xEF\xBF\xBD");
    }
    bytes.clear();
    n_bytes = 0;
  };
  for (std::string& t : tokens) {
    if (const std::optional<uint8_t> b = parse_byte_piece(t)) {
      bytes += static_cast<char>(*b);
      ++n_bytes;
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  return out;
}

// decoders/strip.rs: per token, up to `start` leading and `stop` trailing copies of one char.
std::string strip(const Decoder& d, const std::string& token) {
  std::vector<size_t> starts;  // byte offset of each code point
  for (size_t i = 0; i < token.size(); i += utf8_len_at(token, i)) starts.push_back(i);
  starts.push_back(token.size());
  const size_t n_chars = starts.size() - 1;
  auto char_is = [&](size_t k) {
    return token.compare(starts[k], starts[k + 1] - starts[k], d.content) == 0;
  };
  size_t start_cut = 0;
  for (size_t k = 0; k < std::min(d.strip_start, n_chars) && char_is(k); ++k) start_cut = k + 1;
  size_t stop_cut = n_chars;
  for (size_t i = 0; i < std::min(d.strip_stop, n_chars - start_cut); ++i) {
    const size_t k = n_chars - i - 1;
    if (!char_is(k)) break;
    stop_cut = k;
  }
  return token.substr(starts[start_cut], starts[stop_cut] - starts[start_cut]);
}

// pre_tokenizers/byte_level.rs (Decoder): a token whose characters are all byte stand-ins
// becomes those bytes, any other token its own UTF-8; then one lossy UTF-8 conversion.
std::string byte_level_decode(const std::vector<std::string>& tokens) {
  std::string bytes;
  for (const std::string& t : tokens) {
    std::string mapped;
    bool all = true;
    for (size_t i = 0; i < t.size() && all; i += utf8_len_at(t, i)) {
      const int b = byte_level_byte(utf8_decode_at(t, i));
      if (b < 0) all = false;
      mapped += static_cast<char>(b);
    }
    bytes += all ? mapped : t;
  }
  return utf8_lossy(bytes);
}

}  // namespace

std::vector<std::string> apply_decoders(const std::vector<Decoder>& decoders,
                                        std::vector<std::string> tokens) {
  for (const Decoder& d : decoders) {
    switch (d.type) {
      case Decoder::Type::kReplace:
        for (std::string& t : tokens) t = d.pattern->replace_all(t, d.content);
        break;
      case Decoder::Type::kByteFallback:
        tokens = byte_fallback(std::move(tokens));
        break;
      case Decoder::Type::kFuse: {  // decoders/fuse.rs
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens = {std::move(all)};
        break;
      }
      case Decoder::Type::kStrip:
        for (std::string& t : tokens) t = strip(d, t);
        break;
      case Decoder::Type::kMetaspace:  // pre_tokenizers/metaspace.rs (Decoder)
        // Quirk kept from HF: in the first token every replacement char is dropped, not
        // only the leading one.
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string out;
          const std::string& t = tokens[i];
          for (size_t k = 0; k < t.size();) {
            if (t.compare(k, d.replacement.size(), d.replacement) == 0) {
              if (!(i == 0 && d.metaspace_prepends)) out += ' ';
              k += d.replacement.size();
            } else {
              out += t[k++];
            }
          }
          tokens[i] = std::move(out);
        }
        break;
      case Decoder::Type::kByteLevel:
        tokens = {byte_level_decode(tokens)};
        break;
    }
  }
  return tokens;
}

}  // namespace kvscope::detail
