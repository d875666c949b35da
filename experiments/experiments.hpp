// One factory per experiment kind; experiments/registry.cpp lists them.
#pragma once

#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/error.hpp"

namespace kvscope {

ExperimentKind perplexity_kind();
ExperimentKind dump_kv_kind();
ExperimentKind kv_spectrum_kind();
ExperimentKind kv_head_reduction_kind();
ExperimentKind retrieval_heads_kind();
ExperimentKind kv_cache_policies_kind();
ExperimentKind train_kind();
ExperimentKind kv_head_finetune_kind();
ExperimentKind quant_drift_kind();
ExperimentKind kv_frontier_kind();

}  // namespace kvscope
