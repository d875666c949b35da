// YAML keys shared by train and kv_head_finetune: the optimisation run (documented in
// docs/experiments.md under both kinds).
#pragma once

#include "kvscope/io/yaml_util.hpp"
#include "kvscope/train/trainer.hpp"

namespace kvscope {

// steps, batch, seq_len, lr, min_lr, warmup, weight_decay, clip; each absent key keeps its
// value in `defaults`. Throws naming SECTION.lr unless lr > 0 and 0 <= min_lr <= lr.
train::TrainOptions parse_train_options(YamlMap& s, const train::TrainOptions& defaults);

}  // namespace kvscope
