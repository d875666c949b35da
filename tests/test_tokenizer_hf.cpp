// Hugging Face tokenizer.json: the shipped tinystories656K BPE (Prepend/Replace normalizer,
// no pre-tokenizer, byte_fallback without byte tokens, normalized special tokens), and two
// hand-made fixtures in tests/data/tokenizers/: a GPT-2 style byte-level BPE and a
// Metaspace(prepend_scheme "first") BPE with byte fallback. Ids are worked out by hand from
// the vocab and merges; the merge loop is checked against a naive rescanning loop.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include "kvscope/io/error.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_tokenizer_common.hpp"

namespace kvscope {
namespace {

using namespace tok_test;
using nlohmann::json;
using Ids = std::vector<int32_t>;

fs::path tinystories_dir() {
  return data_dir() / "models" / "tinystories656K";
}
fs::path gpt2_fixture() {
  return fixtures_dir() / "gpt2_bytelevel" / "tokenizer.json";
}
fs::path metaspace_fixture() {
  return fixtures_dir() / "metaspace_first" / "tokenizer.json";
}

// The tinystories656K pipeline written out naively from its tokenizer.json: prepend "▁",
// spaces -> "▁", one vocab id per character (<unk> for unknown ones, consecutive ones fused),
// then "merge the lowest-rank adjacent pair, leftmost on ties" by rescanning all pairs after
// every merge. Independent of src/tokenizer_hf*.cpp. Texts given to it must not contain the
// special tokens.
struct NaiveTinyStories {
  std::map<std::string, int32_t> vocab;
  std::map<std::pair<int32_t, int32_t>, std::pair<int32_t, int32_t>> merges;  // -> (rank, id)

  NaiveTinyStories() {
    const json j = json::parse(read_bytes(tinystories_dir() / "tokenizer.json"));
    for (const auto& [t, id] : j["model"]["vocab"].items()) vocab[t] = id.get<int32_t>();
    int32_t rank = 0;
    for (const json& m : j["model"]["merges"]) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      const std::string a = s.substr(0, sp), b = s.substr(sp + 1);
      merges[{vocab.at(a), vocab.at(b)}] = {rank++, vocab.at(a + b)};
    }
  }

  Ids encode(const std::string& text) const {
    if (text.empty()) return {};
    std::string norm = "\xE2\x96\x81";
    for (char c : text) norm += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
    Ids ids;
    bool pending_unk = false;
    for (size_t i = 0; i < norm.size();) {
      size_t len = 1;
      while (i + len < norm.size() && (static_cast<unsigned char>(norm[i + len]) & 0xC0) == 0x80)
        ++len;
      const auto it = vocab.find(norm.substr(i, len));
      i += len;
      if (it == vocab.end()) {
        pending_unk = true;
        continue;
      }
      if (pending_unk) ids.push_back(0);
      pending_unk = false;
      ids.push_back(it->second);
    }
    if (pending_unk) ids.push_back(0);
    for (;;) {
      int32_t best_rank = -1, best_id = -1;
      size_t best_idx = 0;
      for (size_t i = 0; i + 1 < ids.size(); ++i) {
        const auto it = merges.find({ids[i], ids[i + 1]});
        if (it != merges.end() && (best_rank < 0 || it->second.first < best_rank)) {
          best_rank = it->second.first;
          best_id = it->second.second;
          best_idx = i;
        }
      }
      if (best_rank < 0) break;
      ids[best_idx] = best_id;
      ids.erase(ids.begin() + best_idx + 1);
    }
    return ids;
  }
};

TEST_CASE("hf tokenizer: tinystories656K hand-checked ids", "[tokenizer]") {
  const auto tok = load_tokenizer(tinystories_dir());
  CHECK(tok->kind() == "hf-bpe-metaspace");
  CHECK(tok->vocab_size() == 2048);
  CHECK(tok->bos_id == 1);  // <|start_story|>, from the template and tokenizer_config.json
  CHECK(tok->eos_id == 2);  // <|end_story|>, from tokenizer_config.json
  CHECK(tok->add_bos);

  // Ranks are positions in model.merges, ids from model.vocab (read off the JSON by hand).
  // "▁Lily": "i l"(48)->"il"=129, "L il"(135)->"Lil"=216, "Lil y"(548)->"Lily"=629; no merge
  // joins "▁"=80 with "L..." in this vocab, whose words carry the "▁" at their end.
  CHECK(tok->encode("Lily") == Ids{80, 629});
  // "▁Once▁upon▁a▁time": "e ▁"(0) "▁ a"(4) "▁a ▁"(23) "i m"(29) "o n"(30) "O n"(66)
  // "u p"(108) "c e▁"(120) "t im"(149) "on ▁a▁"(178) "up on▁a▁"(200) "upon▁a▁ tim"(201),
  // leaving ["▁"=80, "On"=147, "ce▁"=201, "upon▁a▁tim"=282, "e"=57].
  CHECK(tok->encode("Once upon a time") == Ids{80, 147, 201, 282, 57});
  // "▁The▁cat▁sat.": "e ▁"(0) "t ▁"(5) "h e▁"(16) "s a"(26) "a t▁"(62) "T he▁"(166)
  // "c at▁"(330): the final "t" has no "▁" after it, so "sa"=107 "t"=72 "."=10 stay apart.
  CHECK(tok->encode("The cat sat.") == Ids{80, 247, 411, 107, 72, 10});
  // Characters outside the vocab: there are no <0xHH> tokens for byte_fallback to use, so
  // each run of them is one fused <unk>=0: "▁h"=141 "ll"=113 "o▁"=139 "w"=75 "r"=70 "ld"=555.
  CHECK(tok->encode("héllo wörld") == Ids{141, 0, 113, 139, 75, 0, 70, 555});

  // The special tokens are normalized:true, so tokenizers looks for their *normalized* form
  // "▁<|...|>" in the normalized text: at the start (where Prepend put the "▁") and after a
  // space, but not glued to a word.
  CHECK(tok->encode("<|start_story|>Once upon") == Ids{1, 147, 201, 189, 111});
  CHECK(tok->encode("Hi <|end_story|>") == Ids{80, 1158, 2});
  // "Hi<|end_story|>": plain text, "<|"=208 "end"=183 "_story"=209 "|>"=210.
  CHECK(tok->encode("Hi<|end_story|>") == Ids{80, 1158, 208, 183, 209, 210});

  // Decoder: "▁"->" ", ByteFallback, Fuse, Strip one leading space; specials decode to "".
  CHECK(tok->decode(Ids{1, 80, 147, 201, 282, 57, 2}) == "Once upon a time");
  CHECK(tok->decode(Ids{141, 0, 113, 139}) == "hllo ");
  CHECK_THROWS_WITH(tok->decode(Ids{2048}), Catch::Contains("tokenizer.json"));
  CHECK_THROWS_WITH(tok->encode("bad \xFF byte"),
                    Catch::Contains("tokenizer.json") && Catch::Contains("UTF-8 at byte 4"));
}

TEST_CASE("hf tokenizer: heap merge equals the naive rescanning loop", "[tokenizer]") {
  const auto tok = load_tokenizer(tinystories_dir() / "tokenizer.json");
  const NaiveTinyStories naive;
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
      for (const char* special : {"<unk>", "<|start_story|>", "<|end_story|>"})
        REQUIRE(chunk.find(special) == std::string::npos);  // see NaiveTinyStories
      CHECK(tok->encode(chunk) == naive.encode(chunk));
      checked += chunk.size();
    }
  }
  CHECK(checked > 40000);
}

// What decode(encode(text)) must give for tinystories656K: characters without a vocab
// entry become <unk>, a special token, which decodes to nothing; everything else
// (the "▁" dance and Strip's one leading space included) comes back exactly.
std::string without_unknown_chars(const std::string& text, const std::set<std::string>& chars) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    size_t len = 1;
    while (i + len < text.size() && (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80)
      ++len;
    const std::string ch = text.substr(i, len);
    if (ch == " " || chars.count(ch)) out += ch;
    i += len;
  }
  return out;
}

TEST_CASE("hf tokenizer: tinystories656K round trip on the shipped texts", "[tokenizer]") {
  const auto tok = load_tokenizer(tinystories_dir());
  std::set<std::string> chars;  // vocab entries of exactly one character
  const json j = json::parse(read_bytes(tinystories_dir() / "tokenizer.json"));
  for (const auto& [t, id] : j["model"]["vocab"].items()) {
    const auto lead = static_cast<unsigned char>(t[0]);
    const size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    if (t.size() == len) chars.insert(t);
  }
  // The first 128 KB of each text (c4: the first 128 KB of documents): the whole 9 MB takes
  // several seconds here; the llama2c and GPT-2 fixture tests cover full texts.
  for (const NamedText& t : shipped_text_heads(128 * 1024)) {
    INFO(t.name);
    CHECK(first_difference(without_unknown_chars(t.text, chars),
                           tok->decode(tok->encode(t.text))) == "");
  }
}

TEST_CASE("hf tokenizer: GPT-2 byte-level fixture, hand-checked ids", "[tokenizer]") {
  // gpt2_bytelevel/tokenizer.json: ids 0..255 are the bytes 0..255 spelled with GPT-2's
  // bytes_to_unicode characters (' '='Ġ', '\n'='Ċ'); merges (rank -> new id):
  // 0 "Ġ t"->256 "Ġt", 1 "h e"->257, 2 "Ġt he"->258 "Ġthe", 3 "i n"->259, 4 "in g"->260,
  // 5 "Ġ c"->261, 6 "a t"->262, 7 "Ġc at"->263 "Ġcat", 8 "l l"->264, 9 "e ll"->265,
  // 10 "H ell"->266, 11 "Hell o"->267 "Hello", 12 "Ã ©"->268 (é = C3 A9), 13 "Ċ Ċ"->269,
  // 14 "Ġ Ġ"->270; <|endoftext|> = 271 (special, normalized false). No tokenizer_config.json.
  const auto tok = load_tokenizer(gpt2_fixture());
  CHECK(tok->kind() == "hf-bpe-bytelevel");
  CHECK(tok->vocab_size() == 272);
  CHECK(tok->bos_id == -1);
  CHECK(tok->eos_id == -1);
  CHECK_FALSE(tok->add_bos);

  // Regex pieces "Hello" " the" " cat". "Hello": "l l"(8), "e ll"(9), "H ell"(10),
  // "Hell o"(11) -> 267. "Ġthe": "Ġ t"(0) before "h e"(1), then "Ġt he"(2) -> 258.
  // "Ġcat": "Ġ c"(5), "a t"(6), "Ġc at"(7) -> 263.
  CHECK(tok->encode("Hello the cat") == Ids{267, 258, 263});
  // "sing": "i n"(3) then "in g"(4): s=115, "ing"=260.
  CHECK(tok->encode("sing") == Ids{115, 260});
  // The special token is cut out of the raw text first. "café": c a f + "Ã ©"(12)=268;
  // "\n\n" is one regex piece (\s+(?!\S) at the end of the piece) -> "ĊĊ"=269; then 271;
  // "the" has no leading space: t=116 + "he"=257.
  CHECK(tok->encode("caf\xC3\xA9\n\n<|endoftext|>the") ==
        Ids{99, 97, 102, 268, 269, 271, 116, 257});
  // `\s+(?!\S)` leaves the last space of a run for the next word: "a  b" -> "a" " " " b",
  // so no "ĠĠ" (270) here; a regex without the lookahead would give [97, 270, 98].
  CHECK(tok->encode("a  b") == Ids{97, 32, 32, 98});
  // "   x" -> "  " (-> "ĠĠ"=270) and " x" (Ġ=32, x=120).
  CHECK(tok->encode("   x") == Ids{270, 32, 120});
  // "你" = E4 BD A0: no merges, the three byte ids.
  CHECK(tok->encode("\xE4\xBD\xA0") == Ids{228, 189, 160});

  CHECK(tok->decode(Ids{267, 258, 263, 271}) == "Hello the cat");
  // A lone byte of a multi-byte character decodes to U+FFFD (from_utf8_lossy).
  CHECK(tok->decode(Ids{228, 189}) == "\xEF\xBF\xBD");
}

TEST_CASE("hf tokenizer: GPT-2 byte-level fixture round trip", "[tokenizer]") {
  // Byte-level BPE spells every byte, so only the special <|endoftext|> (in the TinyStories
  // files) is lost. First 256 KB of each text, for time.
  const auto tok = load_tokenizer(gpt2_fixture());
  for (const NamedText& t : shipped_text_heads(256 * 1024)) {
    std::string expected = t.text;
    for (size_t p; (p = expected.find("<|endoftext|>")) != std::string::npos;)
      expected.erase(p, 13);
    INFO(t.name);
    CHECK(first_difference(expected, tok->decode(tok->encode(t.text))) == "");
  }
}

TEST_CASE("hf tokenizer: Metaspace prepend_scheme first fixture", "[tokenizer]") {
  // metaspace_first/: <unk>=0 <s>=1 </s>=2 (special, normalized false), <0x00>..<0xFF> =
  // 3..258, then "▁"=259 a=260 b=261 c=262 h=263 e=264 l=265 o=266, merges written as
  // [a, b] pairs: 0 l+l->267, 1 ▁+h->268, 2 e+ll->269, 3 ▁h+ell->270, 4 ▁hell+o->271,
  // 5 h+ell->272. tokenizer_config.json: add_bos_token true, bos <s>, eos </s>.
  const auto tok = load_tokenizer(metaspace_fixture());
  CHECK(tok->kind() == "hf-bpe-metaspace");
  CHECK(tok->bos_id == 1);
  CHECK(tok->eos_id == 2);
  CHECK(tok->add_bos);

  // "hello <s>hello": <s> is cut out of the raw text. The first piece starts the input, so
  // it gets the "▁": "▁hello▁" splits (MergedWithNext) into "▁hello" and "▁". "▁hello":
  // l+l(0), ▁+h(1), e+ll(2), ▁h+ell(3), ▁hell+o(4) -> 271. The piece after <s> does not start
  // the input: no "▁"; "hello": l+l(0), e+ll(2), h+ell(5) -> "hell"=272, "o"=266.
  CHECK(tok->encode("hello <s>hello") == Ids{271, 259, 1, 272, 266});
  // "é" is not in the vocab: byte fallback to <0xC3>=3+0xC3=198, <0xA9>=3+0xA9=172.
  CHECK(tok->encode("\xC3\xA9") == Ids{259, 198, 172});
  // Decoder ByteFallback then Metaspace: the first token loses its "▁".
  CHECK(tok->decode(Ids{271, 259, 1, 272, 266}) == "hello hello");
  CHECK(tok->decode(Ids{259, 198, 172}) == "\xC3\xA9");
}

TEST_CASE("hf tokenizer: malformed tokenizer.json", "[tokenizer]") {
  SECTION("unknown normalizer type (fixture)") {
    const fs::path p = fixtures_dir() / "bad_normalizer" / "tokenizer.json";
    REQUIRE_THROWS_AS(load_tokenizer(p), Error);
    REQUIRE_THROWS_WITH(load_tokenizer(p),
                        Catch::Contains(p.string()) && Catch::Contains("FancyNormalizer"));
  }
  SECTION("one bad component at a time") {
    // The GPT-2 fixture with one field replaced; each error names the file and the culprit.
    const json good = json::parse(read_bytes(gpt2_fixture()));
    struct Case {
      const char* key;
      json value;
      const char* expected;
    };
    const std::vector<Case> cases = {
        {"normalizer", {{"type", "Lowercase"}}, "'Lowercase'"},
        {"pre_tokenizer", {{"type", "Whitespace"}}, "'Whitespace'"},
        {"decoder", {{"type", "WordPiece"}}, "'WordPiece'"},
        {"post_processor", {{"type", "BertProcessing"}}, "'BertProcessing'"},
        {"model", {{"type", "Unigram"}, {"vocab", json::array()}}, "'Unigram'"},
        {"pre_tokenizer",
         {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}},
         "(unclosed"},
    };
    for (const Case& c : cases) {
      json j = good;
      j[c.key] = c.value;
      const fs::path p = write_temp_file("tokenizer.json", j.dump());
      INFO(c.key << " = " << c.value.dump());
      CHECK_THROWS_WITH(load_tokenizer(p),
                        Catch::Contains(p.string()) && Catch::Contains(c.expected));
    }
    json j = good;
    j["model"]["merges"].push_back("Ġ zz");
    const fs::path p = write_temp_file("tokenizer.json", j.dump());
    CHECK_THROWS_WITH(load_tokenizer(p), Catch::Contains(p.string()) &&
                                             Catch::Contains("model.merges[15]: token \"zz\""));
  }
  SECTION("not JSON, missing file") {
    const fs::path p = write_temp_file("tokenizer.json", "{\"model\": ");
    REQUIRE_THROWS_WITH(load_tokenizer(p), Catch::Contains(p.string()) && Catch::Contains("JSON"));
    const fs::path missing = temp_path("tokenizer.json");
    REQUIRE_THROWS_WITH(load_tokenizer(missing), Catch::Contains(missing.string()));
  }
}

}  // namespace
}  // namespace kvscope
