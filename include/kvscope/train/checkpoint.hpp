// Trained models on disk, in Hugging Face layout (config.json + model.safetensors, f32)
// so that every kvscope command loads them, plus what resuming needs: the AdamW moments
// (optimizer.safetensors) and trainer_state.json. A checkpoint directory is written as
// DIR.partial and renamed into place, so a killed run leaves the previous one intact.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>

#include "kvscope/model/dtype.hpp"
#include "kvscope/train/trainer.hpp"

namespace kvscope {

namespace train {

struct Checkpoint {
  std::vector<float> w;  // [L.size]
  AdamState adam;
  nlohmann::json state;  // trainer_state.json: step, config fingerprint, ...
};

// Writes `dir` (replacing it): config.json, model.safetensors, the tokenizer copied beside
// them, optimizer.safetensors and trainer_state.json. RoPE models must use the rotate-half
// layout (what Hugging Face files mean).
void save_checkpoint(const std::filesystem::path& dir, const Layout& L, std::span<const float> w,
                     const AdamState& adam, const nlohmann::json& state,
                     const std::filesystem::path& tokenizer);

// Reads a checkpoint written by save_checkpoint, or nullopt when `dir` has none. Throws
// Error naming the file when one exists but does not match L.
std::optional<Checkpoint> load_checkpoint(const std::filesystem::path& dir, const Layout& L);

}  // namespace train
}  // namespace kvscope
