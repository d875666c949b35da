// SentencePiece .model (babyllama105/tok105.model) through libsentencepiece: hand-checked
// ids, round trips with the model's normalization spelled out, and malformed files.
#include <catch2/catch.hpp>

#include "kvscope/io/error.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_tokenizer_common.hpp"

namespace kvscope {
namespace {

using namespace tok_test;
using Ids = std::vector<int32_t>;

fs::path tok105_path() {
  return data_dir() / "models" / "babyllama105" / "tok105.model";
}

// tok105.model's pieces (listed once with a throwaway program over the library): 0 <unk>,
// 1 <s>, 2 </s>, then one character each, ids 3..104 in this order ("▁" is 3). It is a BPE
// model with no merges, byte_fallback off, normalizer "identity" with the default
// add_dummy_prefix and remove_extra_whitespaces.
const char* const kTok105Chars[] = {"\xE2\x96\x81",
                                    "e",
                                    "a",
                                    "t",
                                    "o",
                                    "h",
                                    "n",
                                    "i",
                                    "d",
                                    "s",
                                    "r",
                                    "l",
                                    "y",
                                    "m",
                                    "w",
                                    "u",
                                    ".",
                                    "p",
                                    "g",
                                    "c",
                                    "b",
                                    "f",
                                    ",",
                                    "k",
                                    "T",
                                    "v",
                                    "\"",
                                    "S",
                                    "L",
                                    "'",
                                    "H",
                                    "O",
                                    "I",
                                    "!",
                                    "x",
                                    "B",
                                    "M",
                                    "A",
                                    "W",
                                    "j",
                                    "?",
                                    "z",
                                    "Y",
                                    "F",
                                    "J",
                                    "D",
                                    "q",
                                    "C",
                                    "N",
                                    "E",
                                    "P",
                                    "R",
                                    "K",
                                    "G",
                                    "-",
                                    "\xE2\x80\x9C",
                                    "\xE2\x80\x9D",
                                    ":",
                                    "\xE2\x80\x99",
                                    "Z",
                                    "V",
                                    "U",
                                    "3",
                                    "Q",
                                    ";",
                                    "1",
                                    "\xE2\x80\x93",
                                    "0",
                                    "X",
                                    "2",
                                    "5",
                                    "\xE2\x80\x94",
                                    "\xE2\x80\x98",
                                    "9",
                                    "4",
                                    "\xC3\xA9",
                                    "\xE2\x80\xA6",
                                    "8",
                                    ")",
                                    "(",
                                    "6",
                                    "7",
                                    "/",
                                    "\xC3\xB1",
                                    "$",
                                    "`",
                                    "+",
                                    "*",
                                    "\xC2\xA0",
                                    "&",
                                    "\\",
                                    "%",
                                    "\xC3\xA2",
                                    "\xE2\x82\xAC",
                                    "<",
                                    ">",
                                    "|",
                                    "\xE2\x84\xA2",
                                    "[",
                                    "]",
                                    "~",
                                    "\xE2\x80\x8A"};

int32_t piece_id(const std::string& ch) {
  for (size_t i = 0; i < std::size(kTok105Chars); ++i)
    if (ch == kTok105Chars[i]) return static_cast<int32_t>(i) + 3;
  return 0;
}

// What decode(encode(text)) gives with this model: remove_extra_whitespaces drops leading
// and trailing spaces and squeezes runs of spaces (ASCII ' ' only) before encoding; each run
// of characters without a piece becomes one <unk>, which decodes to nothing; and decoding
// drops the "▁" of every piece until one produces text, so spaces that end up leading once
// the unknown characters are gone (e.g. after a leading "\n") are dropped too.
std::string sentencepiece_round_trip(const std::string& text) {
  std::string squeezed;
  for (char c : text)
    if (!(c == ' ' && (squeezed.empty() || squeezed.back() == ' '))) squeezed += c;
  while (!squeezed.empty() && squeezed.back() == ' ') squeezed.pop_back();
  std::string out;
  for (size_t i = 0; i < squeezed.size();) {
    size_t len = 1;
    while (i + len < squeezed.size() &&
           (static_cast<unsigned char>(squeezed[i + len]) & 0xC0) == 0x80)
      ++len;
    const std::string ch = squeezed.substr(i, len);
    if (ch == " " ? !out.empty() : piece_id(ch) != 0) out += ch;
    i += len;
  }
  return out;
}

TEST_CASE("sentencepiece tokenizer: hand-checked ids", "[tokenizer]") {
  const auto tok = load_tokenizer(tok105_path());
  CHECK(tok->kind() == "sentencepiece");
  CHECK(tok->vocab_size() == 105);
  CHECK(tok->bos_id == 1);
  CHECK(tok->eos_id == 2);
  CHECK(tok->add_bos);

  // No merges: the dummy prefix "▁"=3, then one piece per character (table above),
  // spaces -> "▁": H=33 i=10 ▁=3 t=6 h=8 e=4 r=13 e=4.
  CHECK(tok->encode("Hi there") == Ids{3, 33, 10, 3, 6, 8, 4, 13, 4});
  // Extra spaces squeezed, trailing one dropped: "▁Hello▁world".
  CHECK(tok->encode("Hello  world ") == Ids{3, 33, 4, 14, 14, 7, 3, 17, 7, 13, 14, 11});
  // "\n\n" has no piece: one <unk> for the run.
  CHECK(tok->encode("a\n\nb") == Ids{3, 5, 0, 23});
  CHECK(tok->encode("").empty());
  CHECK(tok->decode(Ids{1, 3, 5, 0, 23, 2}) == "ab");
  CHECK(tok->decode(Ids{3, 33, 10, 3, 6, 8, 4, 13, 4}) == "Hi there");
  CHECK_THROWS_WITH(tok->decode(Ids{105}), Catch::Contains("tok105.model"));

  // The table above is what the model holds: every listed character is its own piece.
  for (size_t i = 1; i < std::size(kTok105Chars); ++i)
    CHECK(tok->encode(kTok105Chars[i]) == Ids{3, static_cast<int32_t>(i) + 3});
}

TEST_CASE("sentencepiece tokenizer: round trip on the shipped texts", "[tokenizer]") {
  // Only characters with a piece survive (see sentencepiece_round_trip). The library
  // encodes and decodes at about 1 MB/s each here, so the first 64 KB of each text.
  const auto tok = load_tokenizer(tok105_path());
  for (const NamedText& t : shipped_text_heads(64 * 1024)) {
    INFO(t.name);
    CHECK(first_difference(sentencepiece_round_trip(t.text), tok->decode(tok->encode(t.text))) ==
          "");
  }
}

TEST_CASE("sentencepiece tokenizer: malformed files", "[tokenizer]") {
  SECTION("garbage") {
    std::string junk;
    for (int i = 0; i < 300; ++i) junk += static_cast<char>((i * 73 + 41) % 256);
    const fs::path p = write_temp_file("garbage.model", junk);
    REQUIRE_THROWS_AS(load_tokenizer(p), Error);
    REQUIRE_THROWS_WITH(load_tokenizer(p), Catch::Contains(p.string()));
  }
  SECTION("empty pieces and NUL bytes, which abort libsentencepiece, are refused first") {
    // ModelProto wire format by hand: field 1 (pieces), each a SentencePiece message with
    // field 1 (piece, bytes) and field 3 (type varint: 2 = UNKNOWN, 1 = NORMAL).
    const std::string unk("\x0a\x09\x0a\x05<unk>\x18\x02", 11);
    const fs::path empty =
        write_temp_file("empty_piece.model", unk + std::string("\x0a\x04\x0a\x00\x18\x01", 6));
    REQUIRE_THROWS_WITH(load_tokenizer(empty),
                        Catch::Contains(empty.string()) && Catch::Contains("piece 1 is empty"));
    const fs::path nul = write_temp_file("nul_piece.model", unk + std::string("\x0a\x07\x0a\x03"
                                                                              "a\0b"
                                                                              "\x18\x01",
                                                                              9));
    REQUIRE_THROWS_WITH(load_tokenizer(nul),
                        Catch::Contains("piece 1 is a string with a NUL byte"));
    // A piece message without the piece field is an empty piece too.
    const fs::path none =
        write_temp_file("no_piece.model", unk + std::string("\x0a\x02\x18\x01", 4));
    REQUIRE_THROWS_WITH(load_tokenizer(none), Catch::Contains("piece 1 is empty"));
  }
  SECTION("missing file") {
    const fs::path p = temp_path("missing.model");
    REQUIRE_THROWS_WITH(load_tokenizer(p), Catch::Contains(p.string()));
  }
}

}  // namespace
}  // namespace kvscope
