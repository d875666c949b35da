// A tokenizer may be longer than the model's vocabulary only by special added tokens
// (gemma-3-1b: 262144 rows, tokenizer.json adds <image_soft_token> at 262144); any other
// token past the rows means the two do not belong together.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "kvscope/io/error.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

using namespace kvscope;
namespace fs = std::filesystem;

TEST_CASE("tokens past the model's vocabulary are allowed only when special",
          "[tokenizer][loaders]") {
  const fs::path dir = fs::path(KVSCOPE_TEST_DATA_DIR) / "models/tinystories656K";
  const Model m = load_model(dir);
  REQUIRE(m.config.vocab_size == 2048);
  nlohmann::json j = nlohmann::json::parse(test::slurp(dir / "tokenizer.json"));
  test::TempDir d("tok_fit");
  auto with_extra = [&](bool special) {
    nlohmann::json k = j;
    k["added_tokens"].push_back({{"id", 2048}, {"content", "<image_soft_token>"},
                                 {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                                 {"normalized", false}, {"special", special}});
    test::write_bytes(d.path / "tokenizer.json", k.dump());
    return load_tokenizer(d.path / "tokenizer.json");
  };
  const auto ok = with_extra(true);
  REQUIRE(ok->vocab_size() == 2049);
  CHECK_NOTHROW(check_tokenizer_fits(m, *ok, d.path / "tokenizer.json"));
  const auto bad = with_extra(false);
  CHECK_THROWS_WITH(check_tokenizer_fits(m, *bad, d.path / "tokenizer.json"),
                    Catch::Contains("has 2049 tokens") && Catch::Contains("vocabulary of 2048") &&
                        Catch::Contains("token 2048 '<image_soft_token>'"));
}
