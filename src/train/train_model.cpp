#include "kvscope/train/train_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kvscope/io/error.hpp"
#include "kvscope/train/train_ops.hpp"

namespace kvscope::train {

Layout make_layout(const ModelConfig& c) {
  KV_CHECK(c.positional != PositionalKind::kRope || c.head_dim % 2 == 0,
           "training: RoPE needs an even head_dim, got {}", c.head_dim);
  // Static scalings only change the frequencies (rope_inv_freq); longrope also scales cos
  // and sin and picks its factors per call by length.
  KV_CHECK(c.rope_scaling.kind != RopeScalingKind::kLongrope,
           "training: rope_scaling 'longrope' is not supported yet (none, linear, llama3 and "
           "GGUF rope_freqs are)");
  KV_CHECK(!c.qk_norm, "training: models with q/k norms (qwen3) are not supported yet");
  KV_CHECK(!c.qkv_bias && !c.o_bias && !c.mlp_bias,
           "training: models with attention or MLP biases are not supported yet");
  KV_CHECK(c.sliding_window == 0,
           "training: models with a sliding window ({} tokens) are not supported yet",
           c.sliding_window);
  // Gemma's and Phi-3's extras: the trainer's backward pass knows none of them.
  KV_CHECK(c.norm_offset == 0.0f && c.embed_scale == 1.0f && !c.sandwich_norms &&
               c.mlp_act == MlpActivation::kSilu && c.attn_scale == 0.0f &&
               c.attn_softcap == 0.0f && c.final_softcap == 0.0f && c.rotary_dim == 0 &&
               c.rope_local_theta == 0.0f,
           "training: model_type '{}' (its (1 + w) norms, embedding scale, sandwich norms, GeGLU, "
           "query_pre_attn_scalar, soft-caps or partial rotary) is not supported yet; train a "
           "llama-shaped model",
           family_name(c.family));
  Layout L;
  L.config = c;
  auto add = [&](std::string name, int64_t rows, int64_t cols) {
    L.tensors.push_back({std::move(name), L.size, rows, cols});
    L.size += size_t(rows * cols);
    return L.tensors.back().offset;
  };
  L.emb = add("model.embed_tokens.weight", c.vocab_size, c.dim);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerSlots s;
    s.attn_norm = add(p + "input_layernorm.weight", 1, c.dim);
    s.wq = add(p + "self_attn.q_proj.weight", c.q_dim(), c.dim);
    s.wk = add(p + "self_attn.k_proj.weight", c.k_proj_dim(), c.dim);
    s.wv = add(p + "self_attn.v_proj.weight", c.kv_dim(), c.dim);
    s.wo = add(p + "self_attn.o_proj.weight", c.dim, c.q_dim());
    if (c.compressed_keys()) {
      s.k_compress = add(p + "self_attn.k_compress.weight", c.kv_dim(),
                         int64_t(c.k_proj_heads / c.n_kv_heads) * c.head_dim);
      s.q_project = add(p + "self_attn.q_project.weight", c.q_dim(), c.head_dim);
    }
    s.ffn_norm = add(p + "post_attention_layernorm.weight", 1, c.dim);
    s.w_gate = add(p + "mlp.gate_proj.weight", c.hidden_dim, c.dim);
    s.w_up = add(p + "mlp.up_proj.weight", c.hidden_dim, c.dim);
    s.w_down = add(p + "mlp.down_proj.weight", c.dim, c.hidden_dim);
    L.layers.push_back(s);
  }
  L.final_norm = add("model.norm.weight", 1, c.dim);
  L.cls = c.tied_embeddings ? L.emb : add("lm_head.weight", c.vocab_size, c.dim);
  return L;
}

std::vector<uint8_t> attention_mask(const Layout& L) {
  std::vector<uint8_t> m(L.size, 0);
  auto on = [&](size_t off, int64_t n) { std::fill_n(m.begin() + long(off), n, uint8_t(1)); };
  const ModelConfig& c = L.config;
  for (const LayerSlots& s : L.layers) {
    on(s.wq, int64_t(c.q_dim()) * c.dim), on(s.wk, int64_t(c.k_proj_dim()) * c.dim);
    on(s.wv, int64_t(c.kv_dim()) * c.dim), on(s.wo, int64_t(c.dim) * c.q_dim());
    if (s.k_compress != LayerSlots::kAbsent) {
      on(s.k_compress, int64_t(c.kv_dim()) * (c.k_proj_heads / c.n_kv_heads) * c.head_dim);
      on(s.q_project, int64_t(c.q_dim()) * c.head_dim);
    }
  }
  return m;
}

template <class T>
std::vector<T> params_from_model(const Model& m, const Layout& L) {
  std::vector<T> w(L.size);
  const Weights& W = m.weights;
  auto put = [&](const Tensor& t, size_t off) {
    const std::vector<float> f = t.to_f32();
    std::copy(f.begin(), f.end(), w.begin() + long(off));
  };
  put(W.tok_embedding, L.emb);
  for (size_t l = 0; l < L.layers.size(); ++l) {
    const LayerWeights& lw = W.layers[l];
    const LayerSlots& s = L.layers[l];
    put(lw.attn_norm, s.attn_norm), put(lw.wq, s.wq), put(lw.wk, s.wk), put(lw.wv, s.wv);
    put(lw.wo, s.wo), put(lw.ffn_norm, s.ffn_norm), put(lw.w_gate, s.w_gate);
    put(lw.w_up, s.w_up), put(lw.w_down, s.w_down);
    if (s.k_compress != LayerSlots::kAbsent) put(lw.k_compress, s.k_compress);
    if (s.q_project != LayerSlots::kAbsent) put(lw.q_project, s.q_project);
  }
  put(W.final_norm, L.final_norm);
  if (!L.config.tied_embeddings) put(W.classifier, L.cls);
  return w;
}

std::vector<float> init_params(const Layout& L, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> w(L.size);
  const double out_scale = 1.0 / std::sqrt(2.0 * std::max(1, L.config.n_layers));
  for (const TensorSpec& t : L.tensors) {
    const bool norm = t.rows == 1;
    const bool out_proj =
        t.name.find("o_proj") != std::string::npos || t.name.find("down_proj") != std::string::npos;
    const double sd = 0.02 * (out_proj ? out_scale : 1.0);
    for (int64_t i = 0; i < t.rows * t.cols; ++i) {
      // Box-Muller from raw 64-bit draws: the same numbers with every standard library.
      const double u1 = (double(rng() >> 11) + 1.0) / 9007199254740993.0;
      const double u2 = double(rng() >> 11) / 9007199254740992.0;
      const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
      w[t.offset + size_t(i)] = norm ? 1.0f : float(sd * z);
    }
  }
  return w;
}

Model model_from_params(const Layout& L, std::span<const float> w, const std::string& name) {
  KV_CHECK(w.size() == L.size, "model_from_params: {} values for {} parameters", w.size(), L.size);
  Model m;
  m.name = name;
  m.format = "memory";
  m.config = L.config;
  auto take = [&](const TensorSpec& t) {
    return make_tensor(t.name, t.rows, t.cols,
                       std::vector<float>(w.begin() + long(t.offset),
                                          w.begin() + long(t.offset + size_t(t.rows * t.cols))));
  };
  size_t i = 0;
  m.weights.tok_embedding = take(L.tensors[i++]);
  for (size_t l = 0; l < L.layers.size(); ++l) {
    LayerWeights lw;
    lw.attn_norm = take(L.tensors[i++]);
    lw.wq = take(L.tensors[i++]);
    lw.wk = take(L.tensors[i++]);
    lw.wv = take(L.tensors[i++]);
    lw.wo = take(L.tensors[i++]);
    if (L.layers[l].k_compress != LayerSlots::kAbsent) {
      lw.k_compress = take(L.tensors[i++]);
      lw.q_project = take(L.tensors[i++]);
    }
    lw.ffn_norm = take(L.tensors[i++]);
    lw.w_gate = take(L.tensors[i++]);
    lw.w_up = take(L.tensors[i++]);
    lw.w_down = take(L.tensors[i++]);
    m.weights.layers.push_back(std::move(lw));
  }
  m.weights.final_norm = take(L.tensors[i++]);
  m.weights.classifier = L.config.tied_embeddings ? m.weights.tok_embedding : take(L.tensors[i++]);
  return m;
}

namespace {

template <class T>
void zero(std::vector<T>& v, size_t n) {
  v.assign(n, T(0));
}

}  // namespace

namespace {

// One sequence through the model (training's own double/float forward and backward): the
// sizes and flags every layer shares, and the workspace that keeps each layer's inputs and
// intermediates for the backward pass.
template <class T>
struct Pass {
  const Layout& L;
  const T* w;
  T* grad;
  Workspace<T>& ws;
  const int S;
  const ModelConfig& c = L.config;
  const int D = c.dim, F = c.hidden_dim, H = c.n_heads, G = c.n_kv_heads, hd = c.head_dim,
            Q = c.q_dim(), KV = c.kv_dim();
  const int KP = c.k_proj_dim();  // width of the K projection ([S, KP] before compression)
  const bool rope_on = c.positional == PositionalKind::kRope;
  const std::vector<double> inv_freq = rope_on ? rope_inv_freq(c) : std::vector<double>{};
  const bool alibi = c.positional == PositionalKind::kAlibi;
  const bool compressed = c.compressed_keys();

  // x [S, D] through layer l, keeping what its backward needs.
  void layer_forward(size_t l) {
    const LayerSlots& s = L.layers[l];
    ws.x_in[l] = ws.x;
    ws.xn1[l].resize(size_t(S) * D), ws.r1[l].resize(size_t(S));
    rmsnorm_fw(ws.x.data(), w + s.attn_norm, S, D, c.norm_eps, ws.xn1[l].data(), ws.r1[l].data());
    // With compressed keys, q and k are first computed into q_rot / k_rot (k_proj_heads
    // heads), rotated, then mapped into the cached heads' basis.
    std::vector<T>& q_raw = compressed ? ws.q_rot[l] : ws.q[l];
    std::vector<T>& k_raw = compressed ? ws.k_rot[l] : ws.k[l];
    q_raw.resize(size_t(S) * Q), k_raw.resize(size_t(S) * KP), ws.v[l].resize(size_t(S) * KV);
    matmul_fw(ws.xn1[l].data(), S, D, w + s.wq, Q, q_raw.data());
    matmul_fw(ws.xn1[l].data(), S, D, w + s.wk, KP, k_raw.data());
    matmul_fw(ws.xn1[l].data(), S, D, w + s.wv, KV, ws.v[l].data());
    if (rope_on) {
      rope(q_raw.data(), S, H, hd, inv_freq, c.rope_layout, false);
      rope(k_raw.data(), S, KP / hd, hd, inv_freq, c.rope_layout, false);
    }
    if (compressed) {
      ws.q[l].resize(size_t(S) * Q), ws.k[l].resize(size_t(S) * KV);
      group_matmul_fw(k_raw.data(), S, G, KP / G, w + s.k_compress, hd, ws.k[l].data());
      group_matmul_fw(q_raw.data(), S, H, hd, w + s.q_project, hd, ws.q[l].data());
    }
    ws.probs[l].resize(size_t(H) * S * S), ws.att[l].resize(size_t(S) * Q);
    attention_fw(ws.q[l].data(), ws.k[l].data(), ws.v[l].data(), S, H, G, hd, alibi,
                 ws.probs[l].data(), ws.att[l].data());
    ws.dtmp.resize(size_t(S) * D);
    matmul_fw(ws.att[l].data(), S, Q, w + s.wo, D, ws.dtmp.data());
    for (size_t i = 0; i < ws.x.size(); ++i) ws.x[i] += ws.dtmp[i];
    ws.x_mid[l] = ws.x;
    ws.xn2[l].resize(size_t(S) * D), ws.r2[l].resize(size_t(S));
    rmsnorm_fw(ws.x.data(), w + s.ffn_norm, S, D, c.norm_eps, ws.xn2[l].data(), ws.r2[l].data());
    ws.a[l].resize(size_t(S) * F), ws.b[l].resize(size_t(S) * F), ws.g[l].resize(size_t(S) * F);
    matmul_fw(ws.xn2[l].data(), S, D, w + s.w_gate, F, ws.a[l].data());
    matmul_fw(ws.xn2[l].data(), S, D, w + s.w_up, F, ws.b[l].data());
    swiglu_fw(ws.a[l].data(), ws.b[l].data(), int64_t(S) * F, ws.g[l].data());
    matmul_fw(ws.g[l].data(), S, F, w + s.w_down, D, ws.dtmp.data());
    for (size_t i = 0; i < ws.x.size(); ++i) ws.x[i] += ws.dtmp[i];
  }

  // dx [S, D] (d of layer li's output) back to d of its input; its weights' gradients
  // added into grad.
  void layer_backward(size_t li) {
    const LayerSlots& s = L.layers[li];
    // x_out = x_mid + swiglu(xn2 Wg^T, xn2 Wu^T) Wd^T
    zero(ws.dg, size_t(S) * F);
    matmul_bw(ws.dx.data(), ws.g[li].data(), S, F, w + s.w_down, D, ws.dg.data(), grad + s.w_down);
    zero(ws.da, size_t(S) * F), zero(ws.db, size_t(S) * F);
    swiglu_bw(ws.dg.data(), ws.a[li].data(), ws.b[li].data(), int64_t(S) * F, ws.da.data(),
              ws.db.data());
    zero(ws.dxn, size_t(S) * D);
    matmul_bw(ws.da.data(), ws.xn2[li].data(), S, D, w + s.w_gate, F, ws.dxn.data(),
              grad + s.w_gate);
    matmul_bw(ws.db.data(), ws.xn2[li].data(), S, D, w + s.w_up, F, ws.dxn.data(), grad + s.w_up);
    rmsnorm_bw(ws.dxn.data(), ws.x_mid[li].data(), w + s.ffn_norm, ws.r2[li].data(), S, D,
               ws.dx.data(), grad + s.ffn_norm);  // dx is now d x_mid
    // x_mid = x_in + attention(xn1) Wo^T
    zero(ws.datt, size_t(S) * Q);
    matmul_bw(ws.dx.data(), ws.att[li].data(), S, Q, w + s.wo, D, ws.datt.data(), grad + s.wo);
    zero(ws.dq, size_t(S) * Q), zero(ws.dk, size_t(S) * KV), zero(ws.dv, size_t(S) * KV);
    attention_bw(ws.datt.data(), ws.q[li].data(), ws.k[li].data(), ws.v[li].data(),
                 ws.probs[li].data(), S, H, G, hd, ws.dq.data(), ws.dk.data(), ws.dv.data());
    if (compressed) {  // back through the maps into the rotated q and k
      zero(ws.dq_rot, size_t(S) * Q), zero(ws.dk_rot, size_t(S) * KP);
      group_matmul_bw(ws.dk.data(), ws.k_rot[li].data(), S, G, KP / G, w + s.k_compress, hd,
                      ws.dk_rot.data(), grad + s.k_compress);
      group_matmul_bw(ws.dq.data(), ws.q_rot[li].data(), S, H, hd, w + s.q_project, hd,
                      ws.dq_rot.data(), grad + s.q_project);
    }
    std::vector<T>& dq_raw = compressed ? ws.dq_rot : ws.dq;
    std::vector<T>& dk_raw = compressed ? ws.dk_rot : ws.dk;
    if (rope_on) {  // the rotation is orthogonal: its backward rotates back
      rope(dq_raw.data(), S, H, hd, inv_freq, c.rope_layout, true);
      rope(dk_raw.data(), S, KP / hd, hd, inv_freq, c.rope_layout, true);
    }
    zero(ws.dxn, size_t(S) * D);
    matmul_bw(dq_raw.data(), ws.xn1[li].data(), S, D, w + s.wq, Q, ws.dxn.data(), grad + s.wq);
    matmul_bw(dk_raw.data(), ws.xn1[li].data(), S, D, w + s.wk, KP, ws.dxn.data(), grad + s.wk);
    matmul_bw(ws.dv.data(), ws.xn1[li].data(), S, D, w + s.wv, KV, ws.dxn.data(), grad + s.wv);
    rmsnorm_bw(ws.dxn.data(), ws.x_in[li].data(), w + s.attn_norm, ws.r1[li].data(), S, D,
               ws.dx.data(), grad + s.attn_norm);  // dx is now d x_in
  }
};

}  // namespace

template <class T>
double loss_and_grad(const Layout& L, const T* w, std::span<const int32_t> tokens, T* grad,
                     double scale, Workspace<T>& ws) {
  const int S = int(tokens.size());
  KV_CHECK(S >= 2, "training: a sequence needs at least 2 tokens, got {}", S);
  Pass<T> p{L, w, grad, ws, S};
  const int D = p.D, V = p.c.vocab_size;
  const size_t nl = L.layers.size();
  for (auto* v : {&ws.x_in, &ws.xn1, &ws.r1, &ws.q, &ws.k, &ws.v, &ws.probs, &ws.att, &ws.x_mid,
                  &ws.xn2, &ws.r2, &ws.a, &ws.b, &ws.g, &ws.q_rot, &ws.k_rot})
    v->resize(nl);
  // Forward, keeping every layer's inputs and intermediates.
  ws.x.resize(size_t(S) * D);
  for (int t = 0; t < S; ++t) {
    KV_CHECK(tokens[size_t(t)] >= 0 && tokens[size_t(t)] < V, "training: token {} out of range",
             tokens[size_t(t)]);
    std::copy_n(w + L.emb + size_t(tokens[size_t(t)]) * D, D, ws.x.begin() + long(t) * D);
  }
  for (size_t l = 0; l < nl; ++l) p.layer_forward(l);
  ws.xf_in = ws.x;
  ws.xfn.resize(size_t(S) * D), ws.rf.resize(size_t(S));
  rmsnorm_fw(ws.x.data(), w + L.final_norm, S, D, p.c.norm_eps, ws.xfn.data(), ws.rf.data());
  ws.logits.resize(size_t(S) * V);
  matmul_fw(ws.xfn.data(), S, D, w + L.cls, V, ws.logits.data());
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(-1);  // the last position predicts nothing here
  int n_targets = 0;
  for (int32_t t : targets) n_targets += t >= 0;
  KV_CHECK(n_targets > 0, "training: the sequence has no target to score");
  if (!grad)
    return cross_entropy<T>(ws.logits.data(), targets.data(), S, V, 0, nullptr) / n_targets;

  // Backward.
  ws.dlogits.resize(size_t(S) * V);
  const double loss =
      cross_entropy(ws.logits.data(), targets.data(), S, V, scale / n_targets, ws.dlogits.data()) /
      n_targets;
  zero(ws.dtmp, size_t(S) * D);  // d xfn
  matmul_bw(ws.dlogits.data(), ws.xfn.data(), S, D, w + L.cls, V, ws.dtmp.data(), grad + L.cls);
  zero(ws.dx, size_t(S) * D);
  rmsnorm_bw(ws.dtmp.data(), ws.xf_in.data(), w + L.final_norm, ws.rf.data(), S, D, ws.dx.data(),
             grad + L.final_norm);
  for (size_t li = nl; li-- > 0;) p.layer_backward(li);
  for (int t = 0; t < S; ++t) {
    T* de = grad + L.emb + size_t(tokens[size_t(t)]) * D;
    for (int i = 0; i < D; ++i) de[i] += ws.dx[size_t(t) * D + i];
  }
  return loss;
}

template std::vector<float> params_from_model<float>(const Model&, const Layout&);
template std::vector<double> params_from_model<double>(const Model&, const Layout&);
template double loss_and_grad<float>(const Layout&, const float*, std::span<const int32_t>, float*,
                                     double, Workspace<float>&);
template double loss_and_grad<double>(const Layout&, const double*, std::span<const int32_t>,
                                      double*, double, Workspace<double>&);

}  // namespace kvscope::train
