// Calibration: run a model over BOS-led windows of a text (include/kvscope/io/sequences.hpp)
// and accumulate, per layer, the Gram matrix of K before RoPE, K after RoPE and/or V with
// all KV heads side by side (include/kvscope/kv/spectrum.hpp). Spectra and the SVD-a
// initialisation of reduced KV heads both start from these.
#pragma once

#include <map>
#include <span>
#include <string>
#include <vector>

#include "kvscope/kv/spectrum.hpp"
#include "kvscope/model/model.hpp"

namespace kvscope {

struct CalibrationGrams {
  std::vector<std::string> tensors;                    // "k_pre_rope", "k", "v"
  std::map<int, std::vector<GramAccumulator>> layers;  // layer -> one per tensor
  int64_t tokens = 0;                                  // rows accumulated (per Gram)
  int sequences = 0;
  int seq_len = 0;

  GramAccumulator& at(int layer, const std::string& tensor);
};

struct CalibrationOptions {
  int64_t tokens = 16384;  // at least this many, in whole sequences
  int seq_len = 0;         // 0: ModelConfig::default_seq_len() (the context, at most 2048)
  std::vector<std::string> tensors = {"k_pre_rope", "k", "v"};
  std::vector<int> layers;                      // empty: all
  bool exclude_bos = false;                     // leave out position 0 of every sequence
  std::string source = "the calibration text";  // the text file, for messages
  std::string keys;  // the config keys that set seq_len and tokens, for messages
};

// Throws when the text is too short for the asked tokens, or a layer is out of range.
CalibrationGrams collect_grams(const Model& m, int32_t bos, std::span<const int32_t> stream,
                               const CalibrationOptions& opt);

}  // namespace kvscope
