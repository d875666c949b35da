// A forward observer that copies every layer's Q, K before and after RoPE and V
// ([heads, T, head_dim] each), for tests that compare them with a reference.
#pragma once

#include <vector>

#include "kvscope/runtime/forward.hpp"

namespace kvscope::test {

struct CaptureQKV : ForwardObserver {
  std::vector<std::vector<float>> q, kpre, k, v;  // per layer
  void on_layer(const LayerCapture& lc) override {
    const size_t nq = size_t(lc.n_heads) * lc.n_tokens * lc.head_dim;
    const size_t n = size_t(lc.n_kv_heads) * lc.n_tokens * lc.head_dim;
    q.emplace_back(lc.q, lc.q + nq);
    kpre.emplace_back(lc.k_pre_rope, lc.k_pre_rope + n);
    k.emplace_back(lc.k, lc.k + n);
    v.emplace_back(lc.v, lc.v + n);
  }
};

}  // namespace kvscope::test
