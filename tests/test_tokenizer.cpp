// load_tokenizer's dispatch on the path, and a speed sanity check over all tokenizers.
#include <catch2/catch.hpp>

#include "kvscope/io/error.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_tokenizer_common.hpp"

namespace kvscope {
namespace {

using namespace tok_test;

TEST_CASE("load_tokenizer picks the format from the path", "[tokenizer]") {
  const fs::path models = data_dir() / "models";
  CHECK(load_tokenizer(models / "tinystories656K")->kind() == "hf-bpe-metaspace");
  CHECK(load_tokenizer(models / "tinystories656K" / "tokenizer.json")->kind() ==
        "hf-bpe-metaspace");
  CHECK(load_tokenizer(models / "babyllama105" / "tok105.model")->kind() == "sentencepiece");
  CHECK(load_tokenizer(models / "stories260K" / "tok512.bin")->kind() == "llama2c");
  CHECK(load_tokenizer(fixtures_dir() / "gpt2_bytelevel")->kind() == "hf-bpe-bytelevel");
  // A directory without tokenizer.json.
  const fs::path empty_dir = temp_path("empty_dir");
  fs::create_directories(empty_dir);
  REQUIRE_THROWS_WITH(load_tokenizer(empty_dir),
                      Catch::Contains(empty_dir.string()) && Catch::Contains("tokenizer.json"));
}

TEST_CASE("tokenizers encode the 300 KB TinyStories text quickly", "[tokenizer]") {
  // Not a timed test: a quadratic merge loop would take minutes on this single 300 KB text
  // (the tinystories656K tokenizer has no pre-tokenizer, so it is one 300K-symbol word).
  // Every tokenizer must also round-trip it (all its characters are in every vocab but
  // babyllama's, whose <unk> run is checked elsewhere).
  const std::string text =
      read_bytes(data_dir() / "text" / "tinystories" / "tinystories_valid_head.txt");
  for (const fs::path& p :
       {data_dir() / "models" / "stories260K" / "tok512.bin",
        data_dir() / "models" / "tinystories656K", fixtures_dir() / "gpt2_bytelevel",
        data_dir() / "models" / "babyllama105" / "tok105.model"}) {
    const auto tok = load_tokenizer(p);
    const std::vector<int32_t> ids = tok->encode(text);
    INFO(p.string());
    CHECK(ids.size() > text.size() / 8);
    if (tok->kind() == "llama2c" || tok->kind() == "hf-bpe-metaspace")
      CHECK(first_difference(text, tok->decode(ids)) == "");
  }
}

}  // namespace
}  // namespace kvscope
