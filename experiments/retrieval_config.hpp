// YAML keys shared by retrieval_heads and kv_cache_policies: the probe and the selection
// (documented in experiments/retrieval_heads.cpp and docs/experiments.md).
#pragma once

#include "kvscope/io/yaml_util.hpp"
#include "kvscope/kv/retrieval_heads.hpp"

namespace kvscope {

ProbeOptions parse_probe_options(YamlMap& s);    // block, repeats, probes, token_lo, token_hi
HeadSelection parse_head_selection(YamlMap& s);  // *_share, *_threshold

}  // namespace kvscope
