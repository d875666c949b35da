// After a fuzzed checkpoint loads, a two-token forward pass through it: the loader's
// checks must leave only models the runtime can run (small ones only, to keep each
// execution in milliseconds).
#pragma once

#include <algorithm>
#include <vector>

#include "kvscope/model/model.hpp"
#include "kvscope/runtime/forward.hpp"

namespace kvscope::fuzz {

inline void run_two_tokens(Model& m) {
  int64_t params = 0;
  for (const TensorSlot& s : tensor_slots(m)) params += s.rows * s.cols;
  if (params > (int64_t(1) << 22) || m.config.max_seq_len < 2) return;
  RunState st(m.config, 2);
  const std::vector<int32_t> toks = {0, std::min(1, m.config.vocab_size - 1)};
  forward(m, st, toks, ForwardOptions{});
}

}  // namespace kvscope::fuzz
