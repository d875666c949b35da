// Perplexity of a model over a token stream with a sliding window.
//
// The stream: each document becomes [BOS] + encode(document) (just encode(document) when
// the tokenizer has no BOS); documents are concatenated in order. Windows: the first
// window is stream[0, W). Each later window ends `stride` tokens after the previous one
// and reaches back so that the model sees W tokens: its input is [BOS] + stream[e-W+1, e)
// (or stream[e-W, e) when that already starts with BOS). A window scores only the
// positions it adds, [previous end, e), so every scored token is predicted once, from at
// least W - stride - 1 tokens of context (fewer at the start of the stream). Targets
// that are BOS (document starts) are not scored: they measure where the text was cut,
// not the model. NLL is computed in double from the float32 logits.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvscope/model/model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope {

struct PerplexityOptions {
  int window = 0;          // tokens per forward pass, BOS included; 0: the model's context
  int stride = 0;          // new tokens scored per window after the first; 0: window / 2
  int64_t max_tokens = 0;  // score at most this many tokens (stream is cut); 0: all
};

struct PerplexityResult {
  int window = 0, stride = 0;  // as resolved
  int64_t tokens_scored = 0;
  int64_t windows = 0;
  int64_t bytes_scored = 0;  // UTF-8 bytes of the decoded scored tokens
  double nll_sum = 0.0;      // natural log
  double mean_nll() const { return tokens_scored ? nll_sum / double(tokens_scored) : 0.0; }
  double perplexity() const;
  double bits_per_byte() const;
  double seconds = 0.0;  // wall time of the forward passes
};

// [BOS] + encode(doc) for each document, concatenated.
std::vector<int32_t> token_stream(const Tokenizer& tok, const std::vector<std::string>& docs);

PerplexityResult perplexity(const Model& m, const Tokenizer& tok, std::span<const int32_t> stream,
                            const PerplexityOptions& opt);

// log sum_v exp(logits[v]), in double (shifted by the max).
double log_sum_exp(std::span<const float> logits);
// -log softmax(logits)[target], in double.
double token_nll(std::span<const float> logits, int32_t target);

}  // namespace kvscope
