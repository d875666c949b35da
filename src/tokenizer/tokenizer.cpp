// load_tokenizer's dispatch on the path, plus the file and UTF-8 helpers that the three
// tokenizer formats share (declared in tokenizer_detail.hpp).
#include "kvscope/tokenizer/tokenizer.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "kvscope/io/error.hpp"
#include "kvscope/io/text_source.hpp"
#include "tokenizer_detail.hpp"

namespace kvscope {

void set_add_bos(Tokenizer& tok, bool add_bos, const std::string& where,
                 const std::filesystem::path& tokenizer_path) {
  KV_CHECK(!add_bos || tok.bos_id >= 0,
           "{}: asks for a BOS token, but the tokenizer {} has none (no template BOS, no "
           "bos_token)",
           where, tokenizer_path.string());
  tok.add_bos = add_bos;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    const auto json = path / "tokenizer.json";
    KV_CHECK(std::filesystem::exists(json, ec),
             "tokenizer directory {}: expected a tokenizer.json in it, found none", path.string());
    return load_hf_tokenizer(json);
  }
  {  // GGUF by its magic, whatever the name
    std::ifstream in(path, std::ios::binary);
    char magic[4] = {};
    in.read(magic, 4);
    if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return load_gguf_tokenizer(path);
  }
  const auto ext = path.extension().string();
  if (ext == ".gguf") return load_gguf_tokenizer(path);  // reports the wrong magic
  if (ext == ".json") return load_hf_tokenizer(path);
  if (ext == ".model") return load_sentencepiece_tokenizer(path);
  return load_llama2c_tokenizer(path);
}

namespace detail {

std::string read_file_bytes(const std::filesystem::path& path) {
  std::error_code ec;
  KV_CHECK(!std::filesystem::is_directory(path, ec),
           "tokenizer file {}: is a directory, expected a file", path.string());
  // Bounded: a tokenizer path pointing at /dev/zero or a huge file must not eat the memory.
  // The largest real ones are tens of MB (Gemma 3's tokenizer.json: 33 MB).
  constexpr size_t kTokenizerReadLimit = size_t(256) << 20;
  try {
    return kvscope::read_file_bytes(path, kTokenizerReadLimit);
  } catch (const Error& e) {
    throw Error(fmt::format("tokenizer file {}", e.what()));
  }
}

char32_t utf8_decode_at(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[k])); };
  const char32_t c = b(i);
  if (c < 0x80) return c;
  if (c < 0xE0) return ((c & 0x1F) << 6) | (b(i + 1) & 0x3F);
  if (c < 0xF0) return ((c & 0x0F) << 12) | ((b(i + 1) & 0x3F) << 6) | (b(i + 2) & 0x3F);
  return ((c & 0x07) << 18) | ((b(i + 1) & 0x3F) << 12) | ((b(i + 2) & 0x3F) << 6) |
         (b(i + 3) & 0x3F);
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const std::optional<size_t> bad = find_invalid_utf8(bytes.substr(i));
    if (!bad) {
      out.append(bytes.substr(i));
      break;
    }
    out.append(bytes.substr(i, *bad));
    i += *bad;
    // The maximal invalid subpart: a lead byte followed by the continuation bytes that
    // could still have completed it (Unicode's "best practice", which Rust follows).
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const unsigned char c = p[i];
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    size_t skip = 1;
    if (len > 0 && i + 1 < bytes.size() && p[i + 1] >= lo && p[i + 1] <= hi) {
      skip = 2;
      while (skip < len && i + skip < bytes.size() && (p[i + skip] & 0xC0) == 0x80) ++skip;
    }
    out += "\xEF\xBF\xBD";
    i += skip;
  }
  return out;
}

std::optional<uint8_t> parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int h = hex(piece[3]), l = hex(piece[4]);
  if (h < 0 || l < 0) return std::nullopt;
  return static_cast<uint8_t>(h * 16 + l);
}

bool is_unicode_whitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

}  // namespace detail
}  // namespace kvscope
