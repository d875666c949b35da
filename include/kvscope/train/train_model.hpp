// A LLaMA model as training sees it: every parameter in one flat vector (what AdamW and
// gradient checks want), a forward pass over one sequence that keeps what the backward
// pass needs, and the backward pass, built from train_ops.hpp. Templated on the scalar:
// float to train, double for gradient checks. Positional kinds: RoPE (both layouts),
// ALiBi, none; grouped-query attention; tied or separate classifier; and the compressed
// keys of models reduced by reduce_kv_heads (kv_reduction.hpp), so that they fine-tune.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvscope/model/model.hpp"

namespace kvscope::train {

struct LayerSlots {
  size_t attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
  // Only in reduced models with compressed keys (ModelConfig::k_proj_heads > 0): wk then
  // projects to k_proj_heads heads, k_compress [kv_dim, group*hd] maps each group's
  // post-RoPE keys to its cached head and q_project [q_dim, hd] maps each query into it.
  size_t k_compress = kAbsent, q_project = kAbsent;
  static constexpr size_t kAbsent = size_t(-1);
};

struct TensorSpec {
  std::string name;  // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  size_t offset;
  int64_t rows, cols;
};

// Where each tensor sits in the flat vector, in tensor_slots order (the classifier only
// when untied).
struct Layout {
  ModelConfig config;
  size_t emb = 0, final_norm = 0, cls = 0;  // cls == emb when tied
  std::vector<LayerSlots> layers;
  std::vector<TensorSpec> tensors;
  size_t size = 0;  // parameters in all
};

// Throws Error for configs training does not support (RoPE with an odd head_dim).
Layout make_layout(const ModelConfig& c);

// [L.size] flags: 1 for the attention weights (Q, K, V, O and, when present, k_compress
// and q_project), 0 elsewhere: TrainOptions::trainable for attention-only fine-tuning.
std::vector<uint8_t> attention_mask(const Layout& L);

// The model's weights, widened, in layout order.
template <class T>
std::vector<T> params_from_model(const Model& m, const Layout& L);

// Fresh weights: matrices N(0, 0.02^2) (the output projections scaled by
// 1/sqrt(2 n_layers), GPT-2 style), norms 1. Deterministic in seed.
std::vector<float> init_params(const Layout& L, uint64_t seed);

// An in-memory Model (owned f32 tensors) that the runtime forward pass and the savers
// accept.
Model model_from_params(const Layout& L, std::span<const float> w, const std::string& name);

// Activations of one sequence kept for the backward pass; reuse across calls.
template <class T>
struct Workspace {
  std::vector<std::vector<T>> x_in, xn1, r1, q, k, v, probs, att, x_mid, xn2, r2, a, b, g;
  std::vector<std::vector<T>> q_rot, k_rot;  // compressed keys only: q and k before mapping
  std::vector<T> x, xf_in, xfn, rf, logits, dlogits, dx, dtmp, dq, dk, dv, datt, dg, da, db, dxn,
      dq_rot, dk_rot;
};

// Mean next-token NLL of tokens[1..T-1] given the prefixes (targets < 0 skipped). When
// `grad` is non-null, adds scale * d(loss)/d(w) into it.
template <class T>
double loss_and_grad(const Layout& L, const T* w, std::span<const int32_t> tokens, T* grad,
                     double scale, Workspace<T>& ws);

}  // namespace kvscope::train
