// SentencePiece .model files through libsentencepiece: the library does normalization,
// encoding and decoding; this file only adapts ids, errors and the "unk decodes to nothing"
// rule of the Tokenizer interface.
#include <sentencepiece_processor.h>

#include "kvscope/io/error.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "kvscope/tokenizer/tokenizer_detail.hpp"

namespace kvscope {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& path) : path_(path.string()) {
    // Reading the bytes ourselves gives the same "cannot open" error as the other formats.
    const std::string bytes = detail::read_file_bytes(path);
    const auto status = sp_.LoadFromSerializedProto(bytes);
    KV_CHECK(status.ok(), "SentencePiece model {}: cannot load: {}", path_, status.ToString());
    KV_CHECK(sp_.GetPieceSize() > 0, "SentencePiece model {}: 0 pieces, expected a vocabulary",
             path_);
    bos_id = sp_.bos_id();
    eos_id = sp_.eos_id();
    add_bos = bos_id >= 0;
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(std::string(text), &ids);
    KV_CHECK(status.ok(), "SentencePiece model {}: encode failed: {}", path_, status.ToString());
    return {ids.begin(), ids.end()};
  }

  std::string decode(std::span<const int32_t> ids) const override {
    // Control pieces (<s>, </s>, pad) already decode to "" in the library; <unk> would
    // decode to " ⁇ ", so it is dropped first. The library strips the dummy-prefix space
    // from the first piece that produces text, so dropping <unk> reads as "<unk> decodes
    // to the empty string".
    std::vector<int> kept;
    kept.reserve(ids.size());
    for (const int32_t id : ids) {
      KV_CHECK(id >= 0 && id < sp_.GetPieceSize(),
               "SentencePiece model {}: token id {} out of range [0, {})", path_, id,
               sp_.GetPieceSize());
      if (!sp_.IsUnknown(id)) kept.push_back(id);
    }
    std::string text;
    const auto status = sp_.Decode(kept, &text);
    KV_CHECK(status.ok(), "SentencePiece model {}: decode failed: {}", path_, status.ToString());
    return text;
  }

  int vocab_size() const override { return sp_.GetPieceSize(); }
  std::string piece(int32_t id) const override {
    KV_CHECK(id >= 0 && id < sp_.GetPieceSize(),
             "SentencePiece model {}: token id {} out of range [0, {})", path_, id,
             sp_.GetPieceSize());
    return sp_.IdToPiece(id);
  }
  std::string kind() const override { return "sentencepiece"; }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& model) {
  return std::make_unique<SentencePieceTokenizer>(model);
}

}  // namespace kvscope
