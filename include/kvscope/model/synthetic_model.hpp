// Random-weight LLaMA checkpoints in Hugging Face format, for tests and benchmarks
// (e.g. a 7B-shaped sharded BF16 model that is never committed). Weights are uniform
// with variance 1/(3*fan_in) (keeps activations O(1) through the layers); norm weights
// are 1 + small noise. Deterministic in `seed`, and written as a stream, so a 13.5 GB
// checkpoint never needs 13.5 GB of memory.
#pragma once

#include <cstdint>
#include <filesystem>

#include "kvscope/model/dtype.hpp"
#include "kvscope/model/model_config.hpp"

namespace kvscope {

struct SyntheticSpec {
  ModelConfig config;        // rope_layout is written as rotate-half (HF convention)
  DType dtype = DType::F32;  // stored dtype of every tensor
  int n_shards = 1;          // >1 writes model-0000i-of-0000n.safetensors + index.json
  uint64_t seed = 1;
  bool write_head_dim = true;  // write "head_dim" into config.json
};

// The splitmix64 mixer the random weights are drawn from (a stateless hash of a counter),
// shared with bench/gen_synthetic_gguf.
uint64_t splitmix64(uint64_t x);

// Writes config.json and the safetensors file(s) into `dir` (created if missing).
void write_synthetic_hf_model(const std::filesystem::path& dir, const SyntheticSpec& spec);

}  // namespace kvscope
