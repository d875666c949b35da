// Internals shared by the tokenizer sources (src/tokenizer*.cpp); not part of the public API.
// Holds the file/UTF-8 helpers, the O(n log n) pair-merge loop that both the llama2.c and the
// Hugging Face BPE use, and the plain-data pieces of the Hugging Face tokenizer.json pipeline.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kvscope/io/utf8.hpp"

namespace kvscope::detail {

// ---- files and UTF-8 ----------------------------------------------------------------

// Whole file as bytes; throws Error naming the file when it is missing or unreadable.
std::string read_file_bytes(const std::filesystem::path& path);

using kvscope::find_invalid_utf8;  // io/utf8.hpp

// Length in bytes of the code point starting at s[i]; `s` must be valid UTF-8.
inline size_t utf8_len_at(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

// Code point starting at s[i]; `s` must be valid UTF-8.
char32_t utf8_decode_at(std::string_view s, size_t i);
void utf8_append(std::string& out, char32_t cp);

// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// The byte of a "<0xHH>" piece (exactly 6 chars, two hex digits), or nullopt.
std::optional<uint8_t> parse_byte_piece(std::string_view piece);

// Unicode White_Space property (what Rust's char::is_whitespace and regex \s accept).
bool is_unicode_whitespace(char32_t cp);

// Hash for unordered containers keyed by std::string that also accepts string_view
// lookups without allocating (C++20 heterogeneous lookup).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// ---- the pair-merge loop --------------------------------------------------------------

// What merging the adjacent pair (left, right) would give: `rank` orders candidates, smaller
// first (HF: the merge's index in `merges`; llama2.c: the index of the new token's score
// among the distinct scores, highest first), ties go to the leftmost pair.
struct PairMerge {
  uint32_t rank = 0;
  int32_t new_id = -1;
};

// (left id, right id) -> PairMerge, open addressing with linear probing: the merge loop
// looks up every candidate pair twice, and std::unordered_map's modulo and node hops cost
// more than the rest of the loop.
class PairTable {
 public:
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  // Later inserts of the same pair overwrite earlier ones.
  void insert(int32_t a, int32_t b, PairMerge m) {
    if (2 * (size_ + 1) > keys_.size()) grow();
    const size_t slot = find_slot(key(a, b));
    if (keys_[slot] == kEmpty) ++size_;
    keys_[slot] = key(a, b);
    values_[slot] = m;
  }
  std::optional<PairMerge> find(int32_t a, int32_t b) const {
    if (keys_.empty()) return std::nullopt;
    const size_t slot = find_slot(key(a, b));
    if (keys_[slot] == kEmpty) return std::nullopt;
    return values_[slot];
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // (-1, -1) is never a pair of ids
  size_t find_slot(uint64_t k) const {
    const size_t mask = keys_.size() - 1;
    size_t slot = static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    while (keys_[slot] != kEmpty && keys_[slot] != k) slot = (slot + 1) & mask;
    return slot;
  }
  void grow() {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<PairMerge> old_values = std::move(values_);
    keys_.assign(std::max<size_t>(16, 2 * old_keys.size()), kEmpty);
    values_.assign(keys_.size(), PairMerge{});
    size_ = 0;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] == kEmpty) continue;
      const size_t slot = find_slot(old_keys[i]);
      keys_[slot] = old_keys[i];
      values_[slot] = old_values[i];
      ++size_;
    }
  }
  std::vector<uint64_t> keys_;
  std::vector<PairMerge> values_;
  size_t size_ = 0;
};

// A min-heap of uint64 with 4 children per node: half the depth of a binary heap, for the
// ~2M-entry heaps of a 2 MB word with no pre-tokenizer.
class QuadHeap {
 public:
  void reserve(size_t n) { v_.reserve(n); }
  bool empty() const { return v_.empty(); }
  void push_unordered(uint64_t x) { v_.push_back(x); }  // then heapify() before any pop
  void heapify() {
    for (size_t i = v_.size(); i-- > 0;) sift_down(i);
  }
  void push(uint64_t x) {
    size_t i = v_.size();
    v_.push_back(x);
    while (i > 0) {
      const size_t parent = (i - 1) / 4;
      if (v_[parent] <= x) break;
      v_[i] = v_[parent];
      i = parent;
    }
    v_[i] = x;
  }
  uint64_t pop() {
    const uint64_t top = v_[0];
    v_[0] = v_.back();
    v_.pop_back();
    if (!v_.empty()) sift_down(0);
    return top;
  }

 private:
  void sift_down(size_t i) {
    const size_t n = v_.size();
    const uint64_t x = v_[i];
    for (;;) {
      const size_t first = 4 * i + 1;
      if (first >= n) break;
      size_t best = first;
      const size_t last = std::min(first + 4, n);
      for (size_t c = first + 1; c < last; ++c)
        if (v_[c] < v_[best]) best = c;
      if (x <= v_[best]) break;
      v_[i] = v_[best];
      i = best;
    }
    v_[i] = x;
  }
  std::vector<uint64_t> v_;
};

// Repeatedly merges the best adjacent pair of `ids` (smallest rank, leftmost on ties) until
// `lookup(left, right)` (-> std::optional<PairMerge>) finds none. Same result as rescanning
// all pairs after every merge, in O(n log n): symbols sit in a linked list, candidates in a
// heap of (rank << 32 | position of the left symbol); the left symbol keeps its
// position when it absorbs its right neighbour, so positions keep the list order and
// "leftmost" is simply the smallest position. A popped candidate is stale when the pair now
// at its position has another rank; a pair with the same rank at the same position is
// exactly the candidate the full rescan would pick next. For HF, where a rank names one
// merge rule, this is Word::merge_all's "same new id" test: two different pairs at one
// position cannot spell the same token, since symbols only grow.
template <class Lookup>
void merge_pairs(std::vector<int32_t>& ids, Lookup&& lookup) {
  const auto n = static_cast<int32_t>(ids.size());
  if (n < 2) return;
  // Pops come in rank order, so positions jump around the word: one 12-byte record per
  // symbol costs one cache miss where three parallel arrays cost three.
  struct Symbol {
    int32_t id, prev, next;  // next: -1 for the last symbol, kDead once merged away
  };
  constexpr int32_t kDead = -2;
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i) sym[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1};
  // Candidates are one integer, (rank << 32 | position), compared in one instruction.
  auto entry = [](uint32_t rank, int32_t pos) {
    return (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(pos);
  };
  QuadHeap heap;
  heap.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i + 1 < n; ++i)
    if (std::optional<PairMerge> m = lookup(sym[i].id, sym[i + 1].id))
      heap.push_unordered(entry(m->rank, i));
  heap.heapify();
  auto push = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    if (std::optional<PairMerge> m = lookup(sym[pos].id, sym[sym[pos].next].id))
      heap.push(entry(m->rank, pos));
  };
  while (!heap.empty()) {
    const uint64_t top = heap.pop();
    const auto pos = static_cast<int32_t>(top & 0xFFFFFFFFu);
    const auto rank = static_cast<uint32_t>(top >> 32);
    Symbol& left = sym[pos];
    if (left.next < 0) continue;  // merged away, or the last symbol
    Symbol& right = sym[left.next];
    const std::optional<PairMerge> now = lookup(left.id, right.id);
    if (!now || now->rank != rank) continue;  // stale: a neighbour changed
    left.id = now->new_id;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = pos;
    right.next = kDead;
    push(left.prev);
    push(pos);
  }
  int32_t out = 0;
  for (int32_t i = 0; i < n; ++i)
    if (sym[i].next != kDead) ids[out++] = sym[i].id;
  ids.resize(out);
}

// ---- Hugging Face tokenizer.json pipeline (plain data, src/tokenizer/tokenizer_hf_pipeline.cpp)
// --

// A compiled PCRE2 pattern (UTF + UCP, JIT when available). Immutable and shareable
// between threads; each search allocates its own match data.
class Regex {
 public:
  // `literal`: match `pattern` as a plain string. Returns nullptr and sets `*error` when
  // PCRE2 rejects the pattern.
  static std::shared_ptr<const Regex> compile(std::string_view pattern, bool literal,
                                              std::string* error);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches [begin, end) from left to right, as Rust's find_iter
  // reports them (after an empty match the search resumes one code point later).
  // `s` must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;
  // Every match replaced by `content` (HF Replace).
  std::string replace_all(std::string_view s, std::string_view content) const;
  bool matches_somewhere(std::string_view s) const { return !find_all(s).empty(); }

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
};

// One pre-token: text plus whether it starts at offset 0 of the original input (HF's
// `offsets_original().0 == 0`, which Metaspace's prepend_scheme "first" looks at).
struct Piece {
  std::string text;
  bool at_start = false;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Normalizer {
  enum class Type { kPrepend, kReplace, kUnicode } type;
  std::string prepend;                                             // kPrepend
  std::shared_ptr<const Regex> pattern;                            // kReplace
  std::string content;                                             // kReplace
  enum class Form { kNFC, kNFD, kNFKC, kNFKD } form = Form::kNFC;  // kUnicode (utf8proc)
};

struct PreTokenizer {
  enum class Type { kMetaspace, kByteLevel, kSplit } type;
  // kMetaspace
  std::string replacement = "\xE2\x96\x81";  // U+2581 "▁"
  enum class Prepend { kAlways, kFirst, kNever } prepend_scheme = Prepend::kAlways;
  bool split = true;
  // kByteLevel
  bool add_prefix_space = true;
  bool use_regex = true;
  // kSplit (kByteLevel keeps the GPT-2 regex here)
  std::shared_ptr<const Regex> pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

struct Decoder {
  enum class Type { kReplace, kByteFallback, kFuse, kStrip, kMetaspace, kByteLevel } type;
  std::shared_ptr<const Regex> pattern;  // kReplace
  std::string content;                   // kReplace; kStrip: the one character stripped
  size_t strip_start = 0, strip_stop = 0;
  std::string replacement = "\xE2\x96\x81";  // kMetaspace
  bool metaspace_prepends = true;            // kMetaspace: prepend_scheme != never
};

// An added token as the text matcher sees it.
struct AddedPattern {
  std::string content;  // already normalized for tokens with normalized == true
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false;
};

// Leftmost-longest search for added tokens (HF AddedVocabulary::find_matches).
class AddedMatcher {
 public:
  explicit AddedMatcher(std::vector<AddedPattern> patterns);
  bool empty() const { return patterns_.empty(); }
  struct Segment {
    size_t begin, end;
    int32_t id;  // -1: plain text
  };
  // Cuts `s` into plain-text and added-token segments covering it; empty plain segments
  // are dropped.
  std::vector<Segment> split(std::string_view s) const;

 private:
  std::vector<AddedPattern> patterns_;
  std::vector<std::vector<int32_t>> by_first_byte_;  // pattern indices, longest first
  std::shared_ptr<const Regex> word_start_, word_end_;
};

// The GPT-2 byte <-> printable-character table (bytes_to_unicode).
const std::vector<std::string>& byte_level_chars();  // byte -> UTF-8 of its character
// The byte a character stands for, or -1 when the character is not in the table.
int byte_level_byte(char32_t cp);

std::string apply_normalizers(const std::vector<Normalizer>& normalizers, std::string s);
// Runs the pre-tokenizers in order; empty pieces are dropped after every step, as HF does.
std::vector<Piece> apply_pre_tokenizers(const std::vector<PreTokenizer>& pre, Piece piece);
// The decoders' decode_chain, in order; the caller concatenates the result.
std::vector<std::string> apply_decoders(const std::vector<Decoder>& decoders,
                                        std::vector<std::string> tokens);

}  // namespace kvscope::detail
