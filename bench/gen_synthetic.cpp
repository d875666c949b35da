// Writes a random-weight LLaMA checkpoint in Hugging Face format (never committed):
//   build/bench/gen_synthetic OUT_DIR [--preset 7b] [--dtype bf16] [--shards 3]
// The 7b preset is LLaMA-2-7B's shape: 32 layers, dim 4096, 32 heads, FFN 11008, vocab
// 32000 (13.5 GB in BF16).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "kvscope/io/error.hpp"
#include "kvscope/model/synthetic_model.hpp"

using namespace kvscope;

int main(int argc, char** argv) {
  CLI::App app{"Write a synthetic LLaMA checkpoint (random weights)"};
  std::string out, preset = "7b", dtype = "bf16";
  int shards = 3;
  uint64_t seed = 1;
  app.add_option("out", out, "output directory")->required();
  app.add_option("--preset", preset, "7b or small")->check(CLI::IsMember({"7b", "small"}));
  app.add_option("--dtype", dtype, "f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  app.add_option("--shards", shards, "number of safetensors shards");
  app.add_option("--seed", seed, "random seed");
  CLI11_PARSE(app, argc, argv);
  SyntheticSpec s;
  ModelConfig& c = s.config;
  if (preset == "7b") {
    c.dim = 4096, c.hidden_dim = 11008, c.n_layers = 32, c.n_heads = 32, c.n_kv_heads = 32;
    c.head_dim = 128, c.vocab_size = 32000, c.max_seq_len = 4096;
  } else {
    c.dim = 256, c.hidden_dim = 688, c.n_layers = 4, c.n_heads = 8, c.n_kv_heads = 8;
    c.head_dim = 32, c.vocab_size = 1000, c.max_seq_len = 1024;
  }
  s.dtype = dtype == "f32" ? DType::F32 : dtype == "f16" ? DType::F16 : DType::BF16;
  s.n_shards = shards;
  s.seed = seed;
  try {
    write_synthetic_hf_model(out, s);
  } catch (const Error& e) {
    std::fprintf(stderr, "gen_synthetic: %s\n", e.what());
    return 1;
  }
  return 0;
}
