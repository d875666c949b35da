// Every experiment kind `kvscope run` knows, in the order `kvscope run --help` lists them.
#include "experiments.hpp"

namespace kvscope {

const std::vector<ExperimentKind>& experiment_kinds() {
  static const std::vector<ExperimentKind> kinds = {
      perplexity_kind(),      dump_kv_kind(),
      kv_spectrum_kind(),     kv_head_reduction_kind(),
      retrieval_heads_kind(), kv_cache_policies_kind(),
      train_kind(),           kv_head_finetune_kind(),
      quant_drift_kind(),     kv_frontier_kind(),
  };
  return kinds;
}

}  // namespace kvscope
