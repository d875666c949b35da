// Fewer KV heads (paper A): turn attention with h KV heads into g < h by merging groups of
// t = h / g adjacent heads. Every method is a per-group orthonormal basis Psi [hd, t*hd]
// (rows): the group's keys k_grp = [k_1; ...; k_t] are replaced by the cached key
// k_c = Psi k_grp, and head i of the group is read back as Psi^(i)^T k_c (Psi^(i) = the
// columns of Psi for head i), so the query of a head that read head i becomes Psi^(i) q.
// Values likewise with Omega, folded into W_V and W_O.
//
//   mean_pool             Psi = [I ... I] / sqrt(t): the mean of the group (the GQA paper's
//                         recipe; stored as the averaged W_K / W_V, queries unchanged)
//   svd_w                 Psi from the SVD of the group's stacked weights (no data)
//   svd_a                 Psi from the calibration activations' Gram (paper A); with RoPE
//                         from post-RoPE keys, which the cache then stores compressed
//   svd_a_fused_pre_rope  Psi from pre-RoPE activations, fused into W_K and W_Q as if
//                         RoPE were absent (exact without RoPE; shows what RoPE-awareness buys)
//
// With RoPE, svd_w and svd_a keep W_K for all h heads and compress after RoPE (ModelConfig::
// k_proj_heads); without RoPE every method folds into the weights and the result is an
// ordinary GQA model. Within its subspace, each Psi is rotated to be as close as possible to
// keeping the group's first head (orthogonal Procrustes): it changes nothing for the methods
// that compress after RoPE, and makes the fused one exact whenever it can be (one head per
// group, or heads that are copies).
#pragma once

#include <string>
#include <vector>

#include "kvscope/kv/calibration.hpp"
#include "kvscope/model/model.hpp"

namespace kvscope {

enum class ReduceMethod { kMeanPool, kSvdW, kSvdA, kSvdAFusedPreRope };
const char* method_name(ReduceMethod m);
ReduceMethod parse_reduce_method(const std::string& s, const std::string& where);
inline bool needs_calibration(ReduceMethod m) {
  return m == ReduceMethod::kSvdA || m == ReduceMethod::kSvdAFusedPreRope;
}

struct LayerBases {
  std::vector<std::vector<double>> keys;    // per new KV head: Psi [hd, t*hd] row-major
  std::vector<std::vector<double>> values;  // per new KV head: Omega [hd, t*hd]
  bool keys_post_rope = true;               // Psi acts on keys after RoPE (else before)
};

struct ReducedModel {
  Model model;
  ReduceMethod method = ReduceMethod::kMeanPool;
  int group = 1;                   // original KV heads per new one (t)
  std::vector<LayerBases> layers;  // the bases each layer used
};

// `cal` must hold, for every layer, the Grams of "k" and "v" (svd_a) or "k_pre_rope" and
// "v" (svd_a_fused_pre_rope) of the original model; it is not used by the other methods.
// Throws when target does not divide the model's KV heads or calibration is missing.
ReducedModel reduce_kv_heads(const Model& m, int target_kv_heads, ReduceMethod method,
                             CalibrationGrams* cal = nullptr);

// The top `hd` eigenvectors of a symmetric g [m, m] as rows, rotated towards keeping the
// first head (Procrustes, see above): Psi [hd, m].
std::vector<double> group_basis(std::vector<double> g, int m, int hd);

// Reconstructs a group's data through its basis: x [n, m] (rows) -> x Psi^T Psi, in place.
void project_rows(std::vector<double>& x, int n, int m, const std::vector<double>& psi, int hd);

}  // namespace kvscope
