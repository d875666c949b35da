// SentencePiece .model files through libsentencepiece: the library does normalization,
// encoding and decoding; this file only adapts ids, errors and the "unk decodes to nothing"
// rule of the Tokenizer interface.
#include <sentencepiece_processor.h>

#include <cstdint>
#include <string_view>

#include "kvscope/io/error.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "tokenizer_detail.hpp"

namespace kvscope {
namespace {

// Protobuf wire format, just enough to walk ModelProto.pieces (field 1, messages) and
// read each SentencePiece.piece (field 1, bytes). libsentencepiece hands the pieces to a
// Darts trie that throws on an empty key or a NUL byte, and that exception escapes the
// library as std::terminate; so such pieces are refused here first. Anything this walk
// cannot follow is left to the library, which reports malformed protos itself.
struct Wire {
  const unsigned char* p;
  const unsigned char* end;
  bool varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
      const unsigned char b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  // Calls fn(field, bytes) for each length-delimited field; false if the walk breaks.
  template <class Fn>
  bool each_bytes_field(Fn&& fn) {
    while (p < end) {
      uint64_t key = 0, len = 0;
      if (!varint(key)) return false;
      switch (key & 7) {
        case 0:
          if (!varint(len)) return false;
          break;
        case 1:
          if (end - p < 8) return false;
          p += 8;
          break;
        case 5:
          if (end - p < 4) return false;
          p += 4;
          break;
        case 2:
          if (!varint(len) || len > uint64_t(end - p)) return false;
          fn(key >> 3, std::string_view(reinterpret_cast<const char*>(p), size_t(len)));
          p += len;
          break;
        default:
          return false;  // groups: not in ModelProto
      }
    }
    return true;
  }
};

void check_pieces(std::string_view proto, const std::string& path) {
  Wire top{reinterpret_cast<const unsigned char*>(proto.data()),
           reinterpret_cast<const unsigned char*>(proto.data()) + proto.size()};
  int64_t index = 0;
  top.each_bytes_field([&](uint64_t field, std::string_view msg) {
    if (field != 1) return;  // ModelProto.pieces
    Wire sub{reinterpret_cast<const unsigned char*>(msg.data()),
             reinterpret_cast<const unsigned char*>(msg.data()) + msg.size()};
    bool has_piece = false;
    const bool walked = sub.each_bytes_field([&](uint64_t f, std::string_view piece) {
      if (f != 1) return;  // SentencePiece.piece
      has_piece = true;
      KV_CHECK(!piece.empty() && piece.find('\0') == std::string_view::npos,
               "SentencePiece model {}: piece {} is {}, expected a non-empty string without "
               "NUL bytes",
               path, index, piece.empty() ? "empty" : "a string with a NUL byte");
    });
    KV_CHECK(!walked || has_piece,
             "SentencePiece model {}: piece {} is empty, expected a non-empty string", path, index);
    ++index;
  });
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // `bytes`: a serialized ModelProto (a .model file's contents); `source` names it in errors.
  SentencePieceTokenizer(const std::string& bytes, std::string source) : path_(std::move(source)) {
    check_pieces(bytes, path_);
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
  // Control pieces (<s>, </s>, <pad>, Gemma's <start_of_turn>) and <unk>: what the library
  // never produces from plain text.
  bool is_special(int32_t id) const override {
    return id >= 0 && id < sp_.GetPieceSize() && (sp_.IsControl(id) || sp_.IsUnknown(id));
  }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& model) {
  // Reading the bytes ourselves gives the same "cannot open" error as the other formats.
  return std::make_unique<SentencePieceTokenizer>(detail::read_file_bytes(model), model.string());
}

std::unique_ptr<Tokenizer> sentencepiece_tokenizer_from_proto(const std::string& model_proto,
                                                              const std::string& source) {
  return std::make_unique<SentencePieceTokenizer>(model_proto, source);
}

}  // namespace kvscope
