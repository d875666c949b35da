// Text generation: prefill the prompt, then decode one token at a time from the cache.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kvscope/model/model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope {

struct GenerateOptions {
  std::string prompt;        // may be empty: generation starts from BOS alone
  int max_tokens = 256;      // new tokens at most (also stops at EOS or a full context)
  float temperature = 0.0f;  // 0: greedy (argmax)
  float top_p = 1.0f;        // nucleus sampling mass; 1: sample from the full softmax
  uint64_t seed = 0;
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;  // BOS included when the tokenizer adds one
  std::vector<int32_t> new_ids;
  std::string text;  // the continuation only
  double prefill_seconds = 0.0, decode_seconds = 0.0;
};

// `on_text` (optional) receives the continuation piece by piece as it is produced.
GenerateResult generate(const Model& m, const Tokenizer& tok, const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text = {});

// Index of the largest logit (ties: the lowest index).
int32_t argmax(const float* logits, int n);

}  // namespace kvscope
