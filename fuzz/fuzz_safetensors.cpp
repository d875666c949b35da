// Hugging Face model directories: config.json + model.safetensors. An input holding the
// separator "\n--8<--\n" is config.json before it and model.safetensors after; any other
// input is a model.safetensors under a fixed two-layer config.
#include <string>

#include "fuzz_model_common.hpp"
#include "fuzz_util.hpp"
#include "kvscope/io/error.hpp"
#include "structured_mutate.hpp"

namespace {

// config.json + separator + model.safetensors: one field of one of them changed (a number
// or type in config.json; a shape, dtype or data_offsets in the safetensors header).
std::optional<std::string> mutate_pair(std::string_view in, kvscope::fuzz::Rng& rng) {
  using namespace kvscope::fuzz;
  const size_t cut = in.find(kSplit);
  if (cut == std::string_view::npos) return mutate_safetensors(in, rng);
  const std::string_view config = in.substr(0, cut), st = in.substr(cut + kSplit.size());
  if (rng() % 2 == 0) {
    const std::optional<std::string> c = mutate_json(config, rng);
    if (c) return *c + std::string(kSplit) + std::string(st);
  }
  const std::optional<std::string> s = mutate_safetensors(st, rng);
  if (!s) return std::nullopt;
  return std::string(config) + std::string(kSplit) + *s;
}

constexpr const char* kConfig = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
  "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "vocab_size": 32, "max_position_embeddings": 16,
  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false})";

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned seed) {
  return kvscope::fuzz::mutate_either(data, size, max_size, seed, mutate_pair);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvscope;
  const std::string_view in = fuzz::as_view(data, size);
  const size_t cut = in.find(fuzz::kSplit);
  const std::string_view config = cut == std::string_view::npos ? kConfig : in.substr(0, cut);
  const std::string_view st =
      cut == std::string_view::npos ? in : in.substr(cut + fuzz::kSplit.size());
  fuzz::write_scratch("config.json", config);
  fuzz::write_scratch("model.safetensors", st);
  try {
    Model m = load_model(fuzz::scratch_dir());
    fuzz::run_two_tokens(m);
  } catch (const Error&) {
    // A clear refusal is the expected outcome for most inputs.
  }
  return 0;
}
