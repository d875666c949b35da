// config.json of Hugging Face checkpoints: every key is either computed with or known to be
// inert; anything that would change the computation and is not implemented is refused by
// name (issue 15's "nothing is silently ignored"). Mistral's sliding window is computed
// exactly where it does not bite and refused where it would.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvscope/io/error.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

SyntheticSpec small_spec(const std::string& arch, int window) {
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.arch = arch;
  c.dim = 32;
  c.hidden_dim = 80;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 61;
  c.max_seq_len = 64;
  c.sliding_window = window;
  return spec;
}

json read_config(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  return json::parse(in);
}

void write_config(const fs::path& dir, const json& j) {
  test::write_bytes(dir / "config.json", j.dump(2));
}

std::string load_error(const fs::path& dir) {
  try {
    load_model(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

}  // namespace

TEST_CASE("config.json keys that would change the computation are refused by name",
          "[loaders][hf_config]") {
  test::TempDir d("hf_config_keys");
  write_synthetic_hf_model(d.path, small_spec("llama", 0));
  const json base = read_config(d.path);
  REQUIRE(load_error(d.path) == "(loaded)");

  struct Case {
    const char* key;
    json value;
    const char* says;
  };
  const Case refused[] = {
      {"partial_rotary_factor", 0.5, "partial rotary"},
      {"quantization_config", json{{"quant_method", "gptq"}}, "quantized"},
      {"sliding_window", 16, "LlamaAttention ignores it"},  // a llama, not a mistral
      {"use_sliding_window", true, "does not implement it"},
      {"attn_logit_softcapping", 50.0, "does not implement it"},
      {"some_future_field", 1, "does not implement it"},
  };
  for (const Case& cs : refused) {
    INFO(cs.key);
    json j = base;
    j[cs.key] = cs.value;
    write_config(d.path, j);
    const std::string err = load_error(d.path);
    CHECK_THAT(err, Contains((d.path / "config.json").string()) &&
                        Contains(std::string("field '") + cs.key + "' = " + cs.value.dump()) &&
                        Contains(cs.says) && Contains("model_type 'llama'"));
  }
  // Inert keys and the "off" values of the features above load.
  json j = base;
  j["use_cache"] = true;
  j["attention_dropout"] = 0.0;
  j["pretraining_tp"] = 1;
  j["transformers_version"] = "4.45.0";
  j["sliding_window"] = nullptr;
  j["use_sliding_window"] = false;
  j["partial_rotary_factor"] = 1.0;
  write_config(d.path, j);
  CHECK(load_error(d.path) == "(loaded)");
}

TEST_CASE("mistral: exact inside the sliding window, refused at and past it",
          "[loaders][hf_config][forward]") {
  test::TempDir d("hf_mistral");
  const int W = 12;
  write_synthetic_hf_model(d.path, small_spec("mistral", W));
  const json j = read_config(d.path);
  REQUIRE(j["model_type"] == "mistral");
  REQUIRE(j["sliding_window"] == W);
  const Model m = load_model(d.path);
  CHECK(m.config.sliding_window == W);

  // Inside the window a windowed and a full causal mask are the same mask, so the naive
  // reference (full attention) is the model's computation; tolerance as for llama.
  std::vector<int32_t> toks;
  for (int t = 0; t < W; ++t) toks.push_back(int32_t((t * 17 + 5) % m.config.vocab_size));
  RunState s(m.config, 64);
  const auto logits = forward(m, s, toks);
  const test::ReferenceRun ref = test::reference_forward(m, toks);
  CHECK(test::rel_error(logits.data(), ref.logits.data(), ref.logits.size()) < 1e-4);

  // One more token would need the window: refused, naming the file and both numbers.
  const int32_t next = 3;
  try {
    forward(m, s, std::span<const int32_t>(&next, 1));
    FAIL("position 12 of a 12-token window was accepted");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("config.json") && Contains("sliding_window is 12") &&
                             Contains("reaches position 12"));
  }
  RunState s2(m.config, 64);
  std::vector<int32_t> longer(size_t(W + 5), 7);
  CHECK_THROWS_WITH(forward(m, s2, longer), Contains("reaches position 16"));
}
