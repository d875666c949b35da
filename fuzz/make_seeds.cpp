// Seeds for the structure-aware model targets: one small random-weight checkpoint of every
// family and architecture kvscope loads, valid in every field, so that mutations start
// inside the loaders' derived-size code rather than at the header.
//   make_seeds OUT_DIR  ->  OUT_DIR/safetensors/FAMILY_VARIANT (config.json, the separator,
//                           model.safetensors) and OUT_DIR/gguf/ARCH_TYPE.gguf
// Written by kvscope's synthetic-model writer and the test converter tests/gguf_convert.hpp
// (llama.cpp's layout); run by scripts/fuzz.sh, so no seed file is committed in bulk.
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>

#include "../tests/gguf_convert.hpp"
#include "fuzz_util.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"

namespace fs = std::filesystem;
using namespace kvscope;

// gguf_convert.hpp writes through this test helper; the test library is not linked here.
void kvscope::test::write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + p.string());
}

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

ModelConfig base(const std::string& arch) {
  ModelConfig c;
  c.family = *family_from_name(arch);
  c.dim = 32, c.hidden_dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
  c.head_dim = 8, c.vocab_size = 48, c.max_seq_len = 32;
  c.rope_layout = RopeLayout::kRotateHalf;
  return c;
}

ModelConfig gemma(const std::string& arch) {
  ModelConfig c = base(arch);
  c.head_dim = 16;  // != dim / heads, as in every Gemma
  c.tied_embeddings = true;
  c.norm_offset = 1.0f, c.sandwich_norms = true, c.mlp_act = MlpActivation::kGeluTanh;
  c.attn_scale = 0.25f, c.sliding_window = 8;
  c.sliding_layers = {1, 0};
  if (arch == "gemma2") {
    c.attn_softcap = 50.0f, c.final_softcap = 30.0f;
  } else {
    c.qk_norm = true, c.rope_local_theta = 10000.0f, c.rope_theta = 1e6f;
  }
  return c;
}

struct Seed {
  std::string name;
  ModelConfig config;
  DType dtype = DType::F32;
};

std::vector<Seed> seeds() {
  std::vector<Seed> s;
  ModelConfig c = base("llama");
  s.push_back({"llama_f32", c});
  c.tied_embeddings = true;
  s.push_back({"llama_tied_bf16", c, DType::BF16});
  c = base("llama");
  c.rope_scaling.kind = RopeScalingKind::kLlama3;
  c.rope_scaling.factor = 8, c.rope_scaling.original_max_position = 16;
  c.eos_id = 2, c.more_eos_ids = {3, 4};
  s.push_back({"llama3_scaled_f16", c, DType::F16});
  c = base("llama");
  c.rope_scaling.kind = RopeScalingKind::kLinear;
  c.rope_scaling.factor = 2;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  s.push_back({"llama_linear_biases", c});
  c = base("mistral");
  c.sliding_window = 8;
  s.push_back({"mistral_window", c});
  c = base("qwen2");
  c.qkv_bias = true, c.tied_embeddings = true;
  s.push_back({"qwen2", c, DType::BF16});
  c = base("qwen3");
  c.qk_norm = true, c.head_dim = 16;
  s.push_back({"qwen3", c});
  s.push_back({"gemma2", gemma("gemma2")});
  s.push_back({"gemma3_text", gemma("gemma3_text"), DType::BF16});
  c = base("phi3");
  c.rotary_dim = 4, c.sliding_window = 16;
  s.push_back({"phi3_partial", c});
  c = base("phi3");
  c.rope_scaling.kind = RopeScalingKind::kLongrope;
  c.rope_scaling.original_max_position = 16;
  c.rope_scaling.short_factor = {1, 1.5, 2, 3};
  c.rope_scaling.long_factor = {2, 3, 4, 6};
  c.rope_scaling.attention_factor = 1.2;
  s.push_back({"phi3_longrope", c});
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds OUT_DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  try {
    fs::create_directories(out / "safetensors");
    fs::create_directories(out / "gguf");
    int n = 0;
    for (const Seed& s : seeds()) {
      const fs::path dir = out / "hf" / s.name;
      write_synthetic_hf_model(dir, {s.config, s.dtype, 1, uint64_t(++n)});
      load_model(dir);
      test::write_bytes(out / "safetensors" / s.name, slurp(dir / "config.json") +
                                                          std::string(fuzz::kSplit) +
                                                          slurp(dir / "model.safetensors"));
      // Mistral converts as llama (the llama seed has it); llama.cpp's llama has no biases.
      if (s.config.family == Family::kMistral ||
          (s.config.family == Family::kLlama && s.config.qkv_bias))
        continue;
      const Model hf = load_model(dir);
      Model deq;
      for (const bool q8 : {false, true}) {
        const fs::path file = out / "gguf" / (s.name + (q8 ? "_q8_0.gguf" : "_f32.gguf"));
        test::write_gguf(file, hf, q8, &deq);
        load_model(file);  // a seed must be valid: mutations start from a loadable file
      }
    }
    fs::remove_all(out / "hf");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
