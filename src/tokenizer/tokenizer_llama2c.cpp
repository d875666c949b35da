// karpathy/llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score,
// int32 len, len bytes, to the end of the file. Encoding reproduces run.c's `encode`
// (dummy-prefix " ", code points with byte fallback id = byte + 3, then merge the adjacent
// pair whose concatenation is the vocab entry with the highest score, leftmost on ties)
// with the heap-based detail::merge_pairs instead of run.c's O(n^2) rescans.
#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "kvscope/io/error.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "tokenizer_detail.hpp"

namespace kvscope {
namespace {

// run.c's fixed ids: <unk> 0, <s> 1, </s> 2, then the 256 byte tokens <0x00>..<0xFF>.
constexpr int32_t kUnkId = 0;
constexpr int32_t kBosId = 1;
constexpr int32_t kEosId = 2;
constexpr int32_t kByteOffset = 3;
// run.c only merges pairs scoring above its initial best_score.
constexpr float kMinScore = -1e10f;
constexpr uint32_t kNoMerge = UINT32_MAX;

class Llama2cTokenizer final : public Tokenizer {
 public:
  explicit Llama2cTokenizer(const std::filesystem::path& path) : path_(path.string()) {
    const std::string bytes = detail::read_file_bytes(path);
    auto read_i32 = [&](size_t off) {
      int32_t v;
      std::memcpy(&v, bytes.data() + off, 4);
      return v;
    };
    KV_CHECK(bytes.size() >= 4, "llama2.c tokenizer {}: {} bytes, expected at least 4 (header)",
             path_, bytes.size());
    const int32_t max_token_length = read_i32(0);
    KV_CHECK(max_token_length > 0, "llama2.c tokenizer {}: max_token_length {}, expected > 0",
             path_, max_token_length);
    size_t off = 4;  // start of the current token's record
    while (off < bytes.size()) {
      const size_t index = pieces_.size();
      KV_CHECK(bytes.size() - off >= 8,
               "llama2.c tokenizer {}: token {} at byte offset {}: {} bytes left, expected 8 "
               "(score and length)",
               path_, index, off, bytes.size() - off);
      float score;
      std::memcpy(&score, bytes.data() + off, 4);
      const int32_t len = read_i32(off + 4);
      off += 8;
      KV_CHECK(len >= 0 && static_cast<size_t>(len) <= bytes.size() - off,
               "llama2.c tokenizer {}: token {} at byte offset {}: length {}, but {} bytes left "
               "after its score and length (truncated file, or not a tokenizer.bin)",
               path_, index, off - 8, len, bytes.size() - off);
      pieces_.emplace_back(bytes.data() + off, static_cast<size_t>(len));
      scores_.push_back(score);
      off += static_cast<size_t>(len);
    }
    KV_CHECK(pieces_.size() >= kByteOffset + 256,
             "llama2.c tokenizer {}: {} tokens, expected at least {} (<unk>, <s>, </s> and the "
             "256 byte tokens)",
             path_, pieces_.size(), kByteOffset + 256);
    for (size_t i = 0; i < pieces_.size(); ++i) {
      // run.c's bsearch picks an unspecified one of duplicate strings; we keep the lowest id.
      piece_ids_.try_emplace(pieces_[i], static_cast<int32_t>(i));
    }
    // Rank = index of the score among the distinct mergeable scores, highest first, so that
    // equal scores tie and fall back to "leftmost" as in run.c's strict `>` scan.
    std::vector<float> distinct;
    for (float sc : scores_)
      if (sc > kMinScore) distinct.push_back(sc);  // also drops NaN, as run.c's `>` does
    std::sort(distinct.begin(), distinct.end(), std::greater<float>());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    score_rank_.resize(scores_.size(), kNoMerge);
    for (size_t i = 0; i < scores_.size(); ++i)
      if (scores_[i] > kMinScore)
        score_rank_[i] = static_cast<uint32_t>(
            std::lower_bound(distinct.begin(), distinct.end(), scores_[i], std::greater<float>()) -
            distinct.begin());
    // Every pair that can merge, found once here instead of concatenating and hashing two
    // strings per heap candidate: each mergeable vocab string split at every point into two
    // vocab strings. Pairs are keyed by representative ids (the id piece_ids_ gives the
    // string), so an id that only duplicates a string merges like the string, as in run.c.
    rep_.resize(pieces_.size());
    for (size_t i = 0; i < pieces_.size(); ++i) rep_[i] = piece_ids_.find(pieces_[i])->second;
    for (size_t i = 0; i < pieces_.size(); ++i) {
      if (rep_[i] != static_cast<int32_t>(i) || score_rank_[i] == kNoMerge) continue;
      const std::string_view t = pieces_[i];
      for (size_t k = 0; k <= t.size(); ++k) {
        const auto left = piece_ids_.find(t.substr(0, k));
        const auto right = piece_ids_.find(t.substr(k));
        if (left != piece_ids_.end() && right != piece_ids_.end())
          pair_merges_.insert(left->second, right->second,
                              detail::PairMerge{score_rank_[i], static_cast<int32_t>(i)});
      }
    }
    const auto space = piece_ids_.find(std::string_view(" "));
    // run.c would push id -1 when " " is missing; the byte token for ' ' is the sane reading.
    dummy_prefix_id_ = space != piece_ids_.end() ? space->second : kByteOffset + ' ';
    bos_id = kBosId;
    eos_id = kEosId;
    add_bos = true;
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    if (text.empty()) return ids;
    ids.reserve(text.size() + 1);
    ids.push_back(dummy_prefix_id_);
    // run.c's UTF-8 walk, byte for byte: a code point is a non-continuation byte plus the
    // continuation bytes after it, at most 4 bytes; invalid input falls out as bytes.
    // (run.c stops at a NUL byte since it reads a C string; we treat NUL as a byte.)
    size_t i = 0;
    while (i < text.size()) {
      size_t len = 1;
      while (len < 4 && i + len < text.size() &&
             (static_cast<uint8_t>(text[i + len]) & 0xC0) == 0x80)
        ++len;
      const std::string_view cp = text.substr(i, len);
      const auto it = piece_ids_.find(cp);
      if (it != piece_ids_.end()) {
        ids.push_back(it->second);
      } else {
        for (char c : cp) ids.push_back(static_cast<uint8_t>(c) + kByteOffset);
      }
      i += len;
    }
    detail::merge_pairs(ids,
                        [&](int32_t a, int32_t b) { return pair_merges_.find(rep_[a], rep_[b]); });
    return ids;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string out;
    for (const int32_t id : ids) {
      KV_CHECK(id >= 0 && static_cast<size_t>(id) < pieces_.size(),
               "llama2.c tokenizer {}: token id {} out of range [0, {})", path_, id,
               pieces_.size());
      if (id == kUnkId || id == kBosId || id == kEosId) continue;
      const std::string& piece = pieces_[id];
      if (const std::optional<uint8_t> byte = detail::parse_byte_piece(piece)) {
        out += static_cast<char>(*byte);
      } else {
        out += piece;
      }
    }
    // encode() prepends one dummy-prefix space to every non-empty text (SentencePiece's
    // add_dummy_prefix, which these vocabularies come from); remove it again, and only at the
    // very start of the decoded string. run.c instead strips a leading space from the piece
    // right after BOS, which is the same thing for a BOS-prefixed prompt. Decoding a
    // continuation on its own therefore also loses its first space: decode the whole
    // sequence, or decode prompt+continuation and cut off the prompt's text.
    if (!out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  std::string piece(int32_t id) const override {
    KV_CHECK(id >= 0 && size_t(id) < pieces_.size(),
             "llama2.c tokenizer {}: token id {} out of range [0, {})", path_, id, pieces_.size());
    return pieces_[size_t(id)];
  }
  std::string kind() const override { return "llama2c"; }

 private:
  std::string path_;
  std::vector<std::string> pieces_;   // [vocab_size] raw bytes of each token
  std::vector<float> scores_;         // [vocab_size]
  std::vector<uint32_t> score_rank_;  // [vocab_size] merge priority, kNoMerge: never merged into
  std::unordered_map<std::string, int32_t, detail::StringHash, std::equal_to<>> piece_ids_;
  std::vector<int32_t> rep_;       // [vocab_size] lowest id with the same string
  detail::PairTable pair_merges_;  // (rep a, rep b) -> merge
  int32_t dummy_prefix_id_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path& path) {
  return std::make_unique<Llama2cTokenizer>(path);
}

}  // namespace kvscope
