// Writes a random-weight checkpoint in Hugging Face format (never committed):
//   build/bench/gen_synthetic OUT_DIR [--preset 7b] [--dtype bf16] [--shards 3]
// Presets carry the real models' shapes and config fields (weights are random):
//   7b          LLaMA-2-7B: 32 layers, dim 4096, 32 heads, FFN 11008, vocab 32000 (13.5 GB)
//   llama3-8b   Llama-3.1-8B: GQA 32/8, FFN 14336, vocab 128256, llama3 rope_scaling
//   mistral-7b  Mistral-7B-v0.1: GQA 32/8, FFN 14336, sliding_window 4096
//   qwen2.5-7b  Qwen2.5-7B: 28 layers, dim 3584, GQA 28/4, FFN 18944, vocab 152064, q/k/v biases
//   qwen3-8b    Qwen3-8B: 36 layers, dim 4096, GQA 32/8, FFN 12288, vocab 151936, q/k norms
//   gemma2-9b   Gemma-2-9B: 42 layers, dim 3584, 16/8 heads of 256, FFN 14336, vocab 256000
//   gemma3-4b   Gemma-3-4B's text stack as gemma3_text: 34 layers, dim 2560, 8/4 heads of 256
//   phi3-mini   Phi-3.5-mini: 32 layers, dim 3072, 32 heads of 96, FFN 8192, longrope
//   small       a 4-layer LLaMA for quick runs
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kvscope/io/error.hpp"
#include "kvscope/model/synthetic_model.hpp"

using namespace kvscope;

int main(int argc, char** argv) {
  CLI::App app{"Write a synthetic LLaMA checkpoint (random weights)"};
  std::string out, preset = "7b", dtype = "bf16";
  int shards = 3;
  uint64_t seed = 1;
  app.add_option("out", out, "output directory")->required();
  const std::vector<std::string> presets = {"7b",         "llama3-8b", "mistral-7b",
                                            "qwen2.5-7b", "qwen3-8b",  "gemma2-9b",
                                            "gemma3-4b",  "phi3-mini", "small"};
  app.add_option("--preset", preset, "model shape")->check(CLI::IsMember(presets));
  app.add_option("--dtype", dtype, "f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  app.add_option("--shards", shards, "number of safetensors shards");
  app.add_option("--seed", seed, "random seed");
  CLI11_PARSE(app, argc, argv);
  SyntheticSpec s;
  ModelConfig& c = s.config;
  auto shape = [&](int dim, int hidden, int layers, int heads, int kv, int hd, int vocab, int ctx) {
    c.dim = dim, c.hidden_dim = hidden, c.n_layers = layers, c.n_heads = heads;
    c.n_kv_heads = kv, c.head_dim = hd, c.vocab_size = vocab, c.max_seq_len = ctx;
  };
  auto gemma = [&](const char* arch) {
    c.family = *family_from_name(arch);
    c.norm_offset = 1.0f, c.embed_scale = std::sqrt(float(c.dim)), c.sandwich_norms = true;
    c.mlp_act = MlpActivation::kGeluTanh, c.attn_scale = 1.0f / 16.0f;  // 256^-1/2
    c.tied_embeddings = true, c.norm_eps = 1e-6f;
  };
  if (preset == "7b") {
    shape(4096, 11008, 32, 32, 32, 128, 32000, 4096);
  } else if (preset == "llama3-8b") {
    shape(4096, 14336, 32, 32, 8, 128, 128256, 131072);
    c.rope_theta = 500000.0f, c.bos_id = 128000, c.eos_id = 128001,
    c.more_eos_ids = {128008, 128009};
    c.rope_scaling = {RopeScalingKind::kLlama3, 8.0, 1.0, 4.0, 8192, {}, {}, 1.0, {}};
  } else if (preset == "mistral-7b") {
    shape(4096, 14336, 32, 32, 8, 128, 32000, 32768);
    c.family = Family::kMistral, c.sliding_window = 4096;
  } else if (preset == "qwen2.5-7b") {
    shape(3584, 18944, 28, 28, 4, 128, 152064, 131072);
    c.family = Family::kQwen2, c.qkv_bias = true, c.rope_theta = 1e6f, c.norm_eps = 1e-6f;
    c.bos_id = 151643, c.eos_id = 151643;
  } else if (preset == "qwen3-8b") {
    shape(4096, 12288, 36, 32, 8, 128, 151936, 40960);
    c.family = Family::kQwen3, c.qk_norm = true, c.rope_theta = 1e6f, c.norm_eps = 1e-6f;
    c.bos_id = 151643, c.eos_id = 151645;
  } else if (preset == "gemma2-9b") {
    shape(3584, 14336, 42, 16, 8, 256, 256000, 8192);
    gemma("gemma2");
    c.attn_softcap = 50.0f, c.final_softcap = 30.0f, c.sliding_window = 4096;
    for (int l = 0; l < c.n_layers; ++l) c.sliding_layers.push_back(l % 2 == 0);
  } else if (preset == "gemma3-4b") {
    shape(2560, 10240, 34, 8, 4, 256, 262208, 131072);
    gemma("gemma3_text");
    c.qk_norm = true, c.rope_theta = 1e6f, c.rope_local_theta = 10000.0f, c.sliding_window = 1024;
    c.rope_scaling.kind = RopeScalingKind::kLinear, c.rope_scaling.factor = 8.0;
    for (int l = 0; l < c.n_layers; ++l) c.sliding_layers.push_back((l + 1) % 6 != 0);
  } else if (preset == "phi3-mini") {
    shape(3072, 8192, 32, 32, 32, 96, 32064, 131072);
    c.family = Family::kPhi3, c.sliding_window = 262144, c.eos_id = 32000;
    RopeScaling& rs = c.rope_scaling;
    rs.kind = RopeScalingKind::kLongrope, rs.original_max_position = 4096;
    for (int i = 0; i < 48; ++i) {  // smooth ramps in the range of the shipped factors
      rs.short_factor.push_back(1.0 + 0.05 * i);
      rs.long_factor.push_back(1.0 + 1.2 * i);
    }
    rs.factor = 32.0, rs.attention_factor = std::sqrt(1.0 + std::log(32.0) / std::log(4096.0));
  } else {
    shape(256, 688, 4, 8, 8, 32, 1000, 1024);
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
