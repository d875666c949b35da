// Does a model copy natural text? (issue 35's test bed: an induction circuit that fires only
// on random-id blocks right after BOS is not what retrieval heads are.) A window of a
// held-out text, [BOS] + text[o, o + L - 1 - n), holds a passage of n tokens at `depth`;
// the same passage is told again as the window's last n tokens. Per window, the mean NLL of
// the passage's tokens 2..n at each occurrence (the first token of an occurrence cannot be
// known from the passage). A model that copies predicts the second occurrence far better.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvscope/model/model.hpp"

namespace kvscope {

struct PassageCopyOptions {
  int context = 0;      // L, tokens per window incl. BOS; 0 = the model's context
  int length = 64;      // n, passage tokens
  double depth = 0.25;  // start of the first occurrence, as a share of the room before it
  int trials = 16;      // windows at offsets 0, L, 2L, ... of the stream (wrapping)
};

struct PassageCopyResult {
  int context = 0, length = 0;
  int gap = 0;  // tokens from the first occurrence's end to the second's start
  std::vector<double> first, second;  // per window: mean NLL (nats) of tokens 2..n
  double mean_first() const;
  double mean_second() const;
  double drop() const;  // 1 - mean_second / mean_first
  // Standard error of drop() across the windows (delta method for a ratio of means).
  double drop_se() const;
};

// `stream`: natural text tokens without BOS (the window's BOS is placed here).
PassageCopyResult passage_copy(const Model& m, std::span<const int32_t> stream,
                               const PassageCopyOptions& o);

}  // namespace kvscope
