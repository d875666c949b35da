// llama2.c tokenizer.bin (stories260K/tok512.bin): hand-checked ids, the heap-based merge
// against a literal port of run.c's O(n^2) `encode`, round trips on every shipped text, and
// malformed files.
#include <catch2/catch.hpp>

#include <cstring>
#include <unordered_map>

#include "kvscope/io/error.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_tokenizer_common.hpp"

namespace kvscope {
namespace {

using namespace tok_test;

fs::path tok512_path() {
  return data_dir() / "models" / "stories260K" / "tok512.bin";
}

// run.c's Tokenizer and `encode`, as written there: read the file, then merge by rescanning
// every adjacent pair after each merge. Independent of src/tokenizer_llama2c.cpp.
struct NaiveLlama2c {
  std::vector<std::string> vocab;
  std::vector<float> scores;
  std::unordered_map<std::string, int> lookup;  // str_lookup; first id for a duplicate

  explicit NaiveLlama2c(const fs::path& path) {
    const std::string b = read_bytes(path);
    size_t off = 4;
    while (off < b.size()) {
      float score;
      int32_t len;
      std::memcpy(&score, b.data() + off, 4);
      std::memcpy(&len, b.data() + off + 4, 4);
      vocab.push_back(b.substr(off + 8, len));
      scores.push_back(score);
      off += 8 + len;
    }
    for (size_t i = 0; i < vocab.size(); ++i) lookup.emplace(vocab[i], static_cast<int>(i));
  }

  std::vector<int32_t> encode(const std::string& text) const {
    std::vector<int32_t> tokens;
    if (text.empty()) return tokens;
    tokens.push_back(lookup.at(" "));
    std::string buf;
    for (size_t c = 0; c < text.size(); ++c) {
      if ((static_cast<unsigned char>(text[c]) & 0xC0) != 0x80) buf.clear();
      buf += text[c];
      if (c + 1 < text.size() && (static_cast<unsigned char>(text[c + 1]) & 0xC0) == 0x80 &&
          buf.size() < 4)
        continue;
      const auto it = lookup.find(buf);
      if (it != lookup.end()) {
        tokens.push_back(it->second);
      } else {
        for (unsigned char ch : buf) tokens.push_back(ch + 3);
      }
      buf.clear();
    }
    for (;;) {
      float best_score = -1e10f;
      int best_id = -1;
      int best_idx = -1;
      for (size_t i = 0; i + 1 < tokens.size(); ++i) {
        const auto it = lookup.find(vocab[tokens[i]] + vocab[tokens[i + 1]]);
        if (it != lookup.end() && scores[it->second] > best_score) {
          best_score = scores[it->second];
          best_id = it->second;
          best_idx = static_cast<int>(i);
        }
      }
      if (best_idx == -1) break;
      tokens[best_idx] = best_id;
      tokens.erase(tokens.begin() + best_idx + 1);
    }
    return tokens;
  }
};

TEST_CASE("llama2c tokenizer: hand-checked ids", "[tokenizer]") {
  const auto tok = load_tokenizer(tok512_path());
  CHECK(tok->kind() == "llama2c");
  CHECK(tok->vocab_size() == 512);
  CHECK(tok->bos_id == 1);
  CHECK(tok->eos_id == 2);
  CHECK(tok->add_bos);

  // Scores from tok512.bin (dumped with a throwaway script): " "=410, "L"=438, "i"=417,
  // "l"=421, "y"=422; "il"=290 (-31), " L"=307 (-48), "ily"=310 (-51), " Lily"=317 (-58).
  // " Lily" -> [" ","L","i","l","y"]: best pair "il" (-31) -> [" ","L","il","y"]; then " L"
  // (-48) beats "ily" (-51) -> [" L","il","y"]; "ily" -> [" L","ily"]; " Lily" (-58).
  CHECK(tok->encode("Lily") == std::vector<int32_t>{317});
  // " Once upon a time": merges in score order " t"(-0) " a"(-2) "im"(-29) "on"(-30) " u"(-59)
  // " O"(-60) " On"(-62) "ce"(-72) " up"(-91) "ime"(-110) " time"(-119) " Once"(-144)
  // " upon"(-148) leave [" Once"=403, " upon"=407, " a"=261, " time"=378].
  CHECK(tok->encode("Once upon a time") == std::vector<int32_t>{403, 407, 261, 378});
  // " The cat sat.": "he"(-1) " s"(-3) " T"(-15) " c"(-21) " The"(-32), then "at"(-35) twice,
  // leftmost first; " sa" (-37) has lost its "a" to "at" by then, and "." (426) stays alone:
  // [" The"=291, " c"=280, "at"=294, " s"=262, "at"=294, "."=426].
  CHECK(tok->encode("The cat sat.") == std::vector<int32_t>{291, 280, 294, 262, 294, 426});
  // "é" (C3 A9) is vocab entry 485; "你" (E4 BD A0) is not, so byte fallback gives
  // 0xE4+3=231, 0xBD+3=192, 0xA0+3=163. " h"=270 (-11) and "ll"=306 (-47) merge, "o"=414,
  // " "=410 (the space before 你: " <0xE4>" is no vocab entry).
  CHECK(tok->encode("héllo 你") == std::vector<int32_t>{270, 485, 306, 414, 410, 231, 192, 163});
  CHECK(tok->encode("").empty());

  // Decoding: BOS/EOS/unk give nothing, <0xHH> gives the raw byte, and only the one space
  // the dummy prefix put at the very start is removed.
  CHECK(tok->decode(std::vector<int32_t>{1, 403, 407, 2}) == "Once upon");
  CHECK(tok->decode(std::vector<int32_t>{0, 231, 192, 163}) == "你");
  CHECK(tok->decode(std::vector<int32_t>{410, 410, 403}) == "  Once");
  CHECK(tok->decode(std::vector<int32_t>{403, 403}) == "Once Once");
  CHECK_THROWS_WITH(tok->decode(std::vector<int32_t>{512}),
                    Catch::Contains("tok512.bin") && Catch::Contains("512"));
}

TEST_CASE("llama2c tokenizer: heap merge equals run.c's O(n^2) loop", "[tokenizer]") {
  const auto tok = load_tokenizer(tok512_path());
  const NaiveLlama2c naive(tok512_path());
  // 2 KB from the start and from the middle of every shipped file, plus the first c4
  // documents: prose, wiki markup, non-ASCII (byte fallback), odd whitespace.
  size_t checked = 0, c4_docs = 0;
  for (const NamedText& t : shipped_texts()) {
    const bool c4 = t.name.rfind("c4/", 0) == 0;
    if (c4 && ++c4_docs > 10) continue;
    for (size_t from : {size_t{0}, t.text.size() / 2}) {
      if (c4 && from > 0) continue;
      std::string chunk = utf8_head(t.text.substr(from), 2048);
      while (!chunk.empty() && (static_cast<unsigned char>(chunk[0]) & 0xC0) == 0x80)
        chunk.erase(0, 1);
      INFO(t.name << " from byte " << from);
      CHECK(tok->encode(chunk) == naive.encode(chunk));
      checked += chunk.size();
    }
  }
  // Invalid UTF-8 goes through run.c's byte walk: a lone continuation byte, a truncated
  // sequence, and more than 4 continuation bytes in a row.
  for (const std::string s : {"\x80"
                              "abc",
                              "ab\xE2\x82", "x\xC3\x80\x80\x80\x80\x80y", "\xFF\xFE"}) {
    CHECK(tok->encode(s) == naive.encode(s));
    CHECK(tok->decode(tok->encode(s)) == s);
  }
  CHECK(checked > 40000);
}

TEST_CASE("llama2c tokenizer: round trip on every shipped text", "[tokenizer]") {
  // Full texts: run.c's scheme can spell any byte string (byte fallback), so decode must
  // give back every text exactly. This is the full-length round trip of the suite (~9 MB,
  // the slowest test here at about a second).
  const auto tok = load_tokenizer(tok512_path());
  for (const NamedText& t : shipped_texts()) {
    INFO(t.name);
    CHECK(first_difference(t.text, tok->decode(tok->encode(t.text))) == "");
  }
}

TEST_CASE("llama2c tokenizer: malformed files", "[tokenizer]") {
  const std::string good = read_bytes(tok512_path());

  SECTION("truncated inside a token") {
    // tok512.bin token records start at byte 4; cutting at 1000 bytes leaves some token's
    // length pointing past the end.
    const fs::path p = write_temp_file("tok_truncated.bin", good.substr(0, 1000));
    REQUIRE_THROWS_WITH(load_tokenizer(p), Catch::Contains(p.string()) &&
                                               Catch::Contains("byte offset") &&
                                               Catch::Contains("token "));
  }
  SECTION("lying length") {
    // Token 0's record starts at byte 4 (after max_token_length); its length is at 8..12.
    std::string bad = good;
    const int32_t huge = 1000000;
    std::memcpy(bad.data() + 8, &huge, 4);
    const fs::path p = write_temp_file("tok_lying.bin", bad);
    REQUIRE_THROWS_WITH(
        load_tokenizer(p),
        Catch::Contains(p.string()) && Catch::Contains("token 0 at byte offset 4: length 1000000"));
  }
  SECTION("header only") {
    const fs::path p = write_temp_file("tok_header.bin", good.substr(0, 4));
    REQUIRE_THROWS_WITH(load_tokenizer(p),
                        Catch::Contains(p.string()) && Catch::Contains("0 tokens"));
  }
  SECTION("missing file") {
    const fs::path p = temp_path("no_such_tokenizer.bin");
    REQUIRE_THROWS_AS(load_tokenizer(p), Error);
    REQUIRE_THROWS_WITH(load_tokenizer(p), Catch::Contains(p.string()));
  }
}

}  // namespace
}  // namespace kvscope
