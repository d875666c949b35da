// The forward pass of a Hugging Face checkpoint directory as transformers computes it,
// read straight from config.json and the safetensors files (see reference_hf.cpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <set>
#include <vector>

#include "reference_model.hpp"

namespace kvscope::test {

// Tokens at positions 0..T-1, in one call (longrope picks its factors from T).
ReferenceRun reference_forward_hf(const std::filesystem::path& dir,
                                  const std::vector<int32_t>& tokens);

}  // namespace kvscope::test
