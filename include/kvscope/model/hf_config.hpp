// The config.json that goes beside a model written in Hugging Face layout (trained
// checkpoints, synthetic test models): what load_hf_llama reads back.
#pragma once

#include <nlohmann/json.hpp>

#include "kvscope/model/dtype.hpp"
#include "kvscope/model/model_config.hpp"

namespace kvscope {

// Hugging Face's rope_scaling object for `rs` (null when none).
nlohmann::json rope_scaling_json(const RopeScaling& rs);

// config.json for a LLaMA model (kvscope_positional for ALiBi / no positions).
nlohmann::json hf_config_json(const ModelConfig& c, DType dtype, bool write_head_dim = true);

}  // namespace kvscope
