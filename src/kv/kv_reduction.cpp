#include "kvscope/kv/kv_reduction.hpp"

#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "kvscope/io/error.hpp"

namespace kvscope {

const char* method_name(ReduceMethod m) {
  switch (m) {
    case ReduceMethod::kMeanPool:
      return "mean_pool";
    case ReduceMethod::kSvdW:
      return "svd_w";
    case ReduceMethod::kSvdA:
      return "svd_a";
    case ReduceMethod::kSvdAFusedPreRope:
      return "svd_a_fused_pre_rope";
  }
  return "?";
}

ReduceMethod parse_reduce_method(const std::string& s, const std::string& where) {
  for (ReduceMethod m : {ReduceMethod::kMeanPool, ReduceMethod::kSvdW, ReduceMethod::kSvdA,
                         ReduceMethod::kSvdAFusedPreRope})
    if (s == method_name(m)) return m;
  throw Error(fmt::format(
      "{}: unknown method '{}' (known: mean_pool, svd_w, svd_a, svd_a_fused_pre_rope)", where, s));
}

std::vector<double> group_basis(std::vector<double> g, int m, int hd) {
  KV_ASSERT(hd <= m && g.size() == size_t(m) * m);
  std::vector<double> w(static_cast<size_t>(m));
  const lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', m, g.data(), m, w.data());
  KV_CHECK(info == 0, "LAPACKE_dsyevd failed on a {}x{} group Gram (info = {})", m, m, info);
  // Eigenvectors are the columns of g, eigenvalues ascending: the top hd are the last.
  std::vector<double> psi(size_t(hd) * m);
  for (int r = 0; r < hd; ++r)
    for (int c = 0; c < m; ++c) psi[size_t(r) * m + c] = g[size_t(c) * m + size_t(m - 1 - r)];
  // Procrustes: the rotation R of the basis closest to E = [I 0 ... 0] (keep head 1):
  // maximise tr(R Psi E^T), R = U V^T from the SVD of M = E Psi^T = Psi[:, :hd]^T.
  std::vector<double> M(size_t(hd) * hd), s(static_cast<size_t>(hd)), u(size_t(hd) * hd),
      vt(size_t(hd) * hd), superb(static_cast<size_t>(std::max(1, hd - 1)));
  for (int a = 0; a < hd; ++a)
    for (int b = 0; b < hd; ++b) M[size_t(a) * hd + b] = psi[size_t(b) * m + a];
  const lapack_int info2 = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'A', 'A', hd, hd, M.data(), hd,
                                          s.data(), u.data(), hd, vt.data(), hd, superb.data());
  KV_CHECK(info2 == 0, "LAPACKE_dgesvd failed on a {}x{} alignment (info = {})", hd, hd, info2);
  std::vector<double> R(size_t(hd) * hd, 0.0), out(size_t(hd) * m, 0.0);
  for (int a = 0; a < hd; ++a)
    for (int b = 0; b < hd; ++b)
      for (int k = 0; k < hd; ++k)
        R[size_t(a) * hd + b] += u[size_t(a) * hd + k] * vt[size_t(k) * hd + b];
  for (int a = 0; a < hd; ++a)
    for (int k = 0; k < hd; ++k) {
      const double r = R[size_t(a) * hd + k];
      for (int c = 0; c < m; ++c) out[size_t(a) * m + c] += r * psi[size_t(k) * m + c];
    }
  return out;
}

void project_rows(std::vector<double>& x, int n, int m, const std::vector<double>& psi, int hd) {
  std::vector<double> z(static_cast<size_t>(hd));
  for (int i = 0; i < n; ++i) {
    double* row = x.data() + size_t(i) * m;
    for (int a = 0; a < hd; ++a) {
      double acc = 0.0;
      for (int c = 0; c < m; ++c) acc += psi[size_t(a) * m + c] * row[c];
      z[size_t(a)] = acc;
    }
    for (int c = 0; c < m; ++c) {
      double acc = 0.0;
      for (int a = 0; a < hd; ++a) acc += psi[size_t(a) * m + c] * z[size_t(a)];
      row[c] = acc;
    }
  }
}

namespace {

using Mat = std::vector<double>;  // row-major

Mat widen(const Tensor& t) {
  const std::vector<float> f = t.to_f32();
  return Mat(f.begin(), f.end());
}

Tensor to_tensor(const std::string& name, const Mat& m, int64_t rows, int64_t cols) {
  return make_tensor(name, rows, cols, std::vector<float>(m.begin(), m.end()));
}

// Rows [r0, r0 + n) of a [*, cols] matrix.
Mat rows_of(const Mat& a, int64_t cols, int64_t r0, int64_t n) {
  return Mat(a.begin() + r0 * cols, a.begin() + (r0 + n) * cols);
}

// c [p, q] = a [p, k] * b [k, q]
Mat matmul(const Mat& a, const Mat& b, int64_t p, int64_t k, int64_t q) {
  Mat c(size_t(p * q), 0.0);
  for (int64_t i = 0; i < p; ++i)
    for (int64_t l = 0; l < k; ++l) {
      const double x = a[size_t(i * k + l)];
      if (x == 0.0) continue;
      for (int64_t j = 0; j < q; ++j) c[size_t(i * q + j)] += x * b[size_t(l * q + j)];
    }
  return c;
}

// Columns [c0, c0 + n) of psi [hd, m]: Psi^(i) [hd, n].
Mat cols_of(const Mat& psi, int64_t m, int64_t c0, int64_t n, int64_t hd) {
  Mat out(size_t(hd * n));
  for (int64_t a = 0; a < hd; ++a)
    for (int64_t b = 0; b < n; ++b) out[size_t(a * n + b)] = psi[size_t(a * m + c0 + b)];
  return out;
}

Mat mean_basis(int t, int hd) {  // [I ... I] / sqrt(t)
  Mat psi(size_t(hd) * t * hd, 0.0);
  for (int r = 0; r < t; ++r)
    for (int a = 0; a < hd; ++a)
      psi[size_t(a) * t * hd + size_t(r) * hd + a] = 1.0 / std::sqrt(double(t));
  return psi;
}

// What a reduction is refused for: targets that do not divide the heads, a model reduced
// already, per-head key norms under methods that merge W_K rows, missing calibration.
void check_reducible(const Model& m, int target, ReduceMethod method, bool compress,
                     const std::string& key_tensor, const CalibrationGrams* cal) {
  const ModelConfig& c = m.config;
  KV_CHECK(!c.compressed_keys(), "model '{}' has already been reduced", m.name);
  KV_CHECK(target >= 1 && target <= c.n_kv_heads && c.n_kv_heads % target == 0,
           "target_kv_heads {} must divide model '{}''s {} KV heads", target, m.name, c.n_kv_heads);
  // A per-head key norm (Qwen3, Gemma 3) acts on each original head before RoPE, so only the
  // methods that compress keys after RoPE keep it exact; merged W_K rows would need a norm of
  // their own.
  KV_CHECK(!c.qk_norm || compress,
           "model '{}' normalises each key head (q_norm/k_norm): {} merges W_K rows before "
           "that norm, which would need a norm of its own; use svd_w or svd_a (they compress "
           "keys after the norm and RoPE)",
           m.name, method_name(method));
  if (!needs_calibration(method)) return;
  KV_CHECK(cal != nullptr, "method {} needs calibration activations", method_name(method));
  for (int l = 0; l < c.n_layers; ++l) {
    KV_CHECK(cal->layers.count(l), "calibration has no Grams for layer {}", l);
    for (const std::string& tn : {key_tensor, std::string("v")})
      KV_CHECK(std::find(cal->tensors.begin(), cal->tensors.end(), tn) != cal->tensors.end(),
               "calibration lacks tensor '{}' needed by {}", tn, method_name(method));
  }
}

// g [n, n] = wg wg^T for wg [n, cols]: its eigenvectors are wg's left singular vectors.
Mat row_gram(const Mat& wg, int n, int cols) {
  Mat g(size_t(n) * n, 0.0);
  for (int a = 0; a < n; ++a)
    for (int b = a; b < n; ++b) {
      double acc = 0.0;
      for (int x = 0; x < cols; ++x) acc += wg[size_t(a) * cols + x] * wg[size_t(b) * cols + x];
      g[size_t(a) * n + b] = g[size_t(b) * n + a] = acc;
    }
  return g;
}

// One layer reduced: per group of t KV heads, bases Psi (keys) and Omega (values) [hd, t*hd]
// are chosen, then W_K and W_V become one head's rows and W_Q / W_O absorb the bases.
// Biases ride along as one more input column ([W | b] acting on [x; 1]): merging,
// projecting or folding W's rows does the same to b, and svd_w's basis sees them as the
// affine map's last column (svd_a sees them in the activations already).
struct LayerReducer {
  const ModelConfig& c;
  const ReduceMethod method;
  const bool compress;
  const int target, t;
  const int hd = c.head_dim, D = c.dim, nh = c.n_heads;
  const int qpk = c.group_size();  // query heads per original KV head
  const int Din = D + (c.qkv_bias ? 1 : 0);
  Mat wq, wk, wv, wo;  // [heads*hd, Din] as read (wo: [D, nh*hd])
  Mat new_wk = Mat(size_t(target) * hd * Din), new_wv = new_wk, new_wq, new_wo;
  Mat k_compress = Mat(size_t(target) * hd * t * hd), q_project = Mat(size_t(nh) * hd * hd);

  LayerReducer(const ModelConfig& config, ReduceMethod m, bool comp, int tgt, const LayerWeights& w)
      : c(config), method(m), compress(comp), target(tgt), t(config.n_kv_heads / tgt) {
    wq = affine(w.wq, w.bq), wk = affine(w.wk, w.bk), wv = affine(w.wv, w.bv), wo = widen(w.wo);
    new_wq = wq, new_wo = wo;
  }

  Mat affine(const Tensor& wt, const Tensor& bt) const {
    const Mat wm = widen(wt);
    if (!c.qkv_bias) return wm;
    const Mat bm = widen(bt);
    Mat a(size_t(wt.rows) * Din);
    for (int64_t row = 0; row < wt.rows; ++row) {
      std::copy(wm.begin() + row * D, wm.begin() + (row + 1) * D, a.begin() + row * Din);
      a[size_t(row * Din + D)] = bm[size_t(row)];
    }
    return a;
  }

  // Group j's bases {Psi, Omega}; wk_grp, wv_grp: its heads' rows [t*hd, Din].
  std::pair<Mat, Mat> bases(int l, int j, const Mat& wk_grp, const Mat& wv_grp,
                            CalibrationGrams* cal, const std::string& key_tensor) const {
    switch (method) {
      case ReduceMethod::kMeanPool:
        return {mean_basis(t, hd), mean_basis(t, hd)};
      case ReduceMethod::kSvdW:  // left singular vectors of the stacked weights
        return {group_basis(row_gram(wk_grp, t * hd, Din), t * hd, hd),
                group_basis(row_gram(wv_grp, t * hd, Din), t * hd, hd)};
      case ReduceMethod::kSvdA:
      case ReduceMethod::kSvdAFusedPreRope:
        return {group_basis(cal->at(l, key_tensor).block(j * t * hd, t * hd, false), t * hd, hd),
                group_basis(cal->at(l, "v").block(j * t * hd, t * hd, false), t * hd, hd)};
    }
    return {};
  }

  // new rows [hd, Din] of group j = the mean of its heads' rows.
  void mean_rows(int j, const Mat& grp, Mat& out) const {
    for (int a = 0; a < hd; ++a)
      for (int x = 0; x < Din; ++x) {
        double acc = 0.0;
        for (int i = 0; i < t; ++i) acc += grp[(size_t(i) * hd + a) * Din + x];
        out[(size_t(j) * hd + a) * Din + x] = acc / t;
      }
  }

  // Query heads reading head i of group j: W_Q folds (or q_project holds) Psi^(i), and
  // W_O's columns take Omega^(i)^T.
  void fold_query_heads(int j, int i, const Mat& psi, const Mat& omega) {
    const Mat psi_i = cols_of(psi, int64_t(t) * hd, int64_t(i) * hd, hd, hd);      // [hd, hd]
    const Mat omega_i = cols_of(omega, int64_t(t) * hd, int64_t(i) * hd, hd, hd);  // [hd, hd]
    for (int qh = (j * t + i) * qpk; qh < (j * t + i + 1) * qpk; ++qh) {
      if (compress) {
        std::copy(psi_i.begin(), psi_i.end(), q_project.begin() + size_t(qh) * hd * hd);
      } else {  // fold: W_Q^(h) <- Psi^(i) W_Q^(h)
        const Mat q_rows = rows_of(wq, Din, int64_t(qh) * hd, hd);
        const Mat q_new = matmul(psi_i, q_rows, hd, hd, Din);
        std::copy(q_new.begin(), q_new.end(), new_wq.begin() + size_t(qh) * hd * Din);
      }
      // W_O[:, h] <- W_O[:, h] Omega^(i)^T
      for (int x = 0; x < D; ++x)
        for (int a = 0; a < hd; ++a) {
          double acc = 0.0;
          for (int b = 0; b < hd; ++b)
            acc += wo[size_t(x) * nh * hd + size_t(qh) * hd + b] * omega_i[size_t(a) * hd + b];
          new_wo[size_t(x) * nh * hd + size_t(qh) * hd + a] = acc;
        }
    }
  }

  // Group j (original KV heads j*t .. j*t+t-1) merged into reduced head j; returns its bases.
  LayerBases reduce(int l, CalibrationGrams* cal, const std::string& key_tensor) {
    LayerBases out;
    out.keys_post_rope = method != ReduceMethod::kSvdAFusedPreRope;
    for (int j = 0; j < target; ++j) {
      const Mat wk_grp = rows_of(wk, Din, int64_t(j) * t * hd, int64_t(t) * hd);  // [t*hd, Din]
      const Mat wv_grp = rows_of(wv, Din, int64_t(j) * t * hd, int64_t(t) * hd);
      auto [psi, omega] = bases(l, j, wk_grp, wv_grp, cal, key_tensor);
      if (method == ReduceMethod::kMeanPool) {
        // Queries unchanged; keys and values the plain means (o = mean v, W_O unchanged).
        mean_rows(j, wk_grp, new_wk);
        mean_rows(j, wv_grp, new_wv);
      } else {
        // Values: W_V <- Omega W_Vgrp. Keys: W_K <- Psi W_Kgrp, or Psi kept to compress the
        // keys after RoPE.
        const Mat v_new = matmul(omega, wv_grp, hd, int64_t(t) * hd, Din);
        std::copy(v_new.begin(), v_new.end(), new_wv.begin() + size_t(j) * hd * Din);
        if (!compress) {
          const Mat k_new = matmul(psi, wk_grp, hd, int64_t(t) * hd, Din);
          std::copy(k_new.begin(), k_new.end(), new_wk.begin() + size_t(j) * hd * Din);
        } else {
          std::copy(psi.begin(), psi.end(), k_compress.begin() + size_t(j) * hd * t * hd);
        }
        for (int i = 0; i < t; ++i) fold_query_heads(j, i, psi, omega);
      }
      out.keys.push_back(std::move(psi));
      out.values.push_back(std::move(omega));
    }
    return out;
  }

  // Splits [W | b] back into W and its bias.
  void store(const std::string& p, const std::string& n, const Mat& a, int64_t rows, Tensor& wt,
             Tensor& bt) const {
    if (!c.qkv_bias) {
      wt = to_tensor(p + n, a, rows, D);
      return;
    }
    Mat wm(size_t(rows) * D), bm(static_cast<size_t>(rows));
    for (int64_t row = 0; row < rows; ++row) {
      std::copy(a.begin() + row * Din, a.begin() + row * Din + D, wm.begin() + row * D);
      bm[size_t(row)] = a[size_t(row * Din + D)];
    }
    wt = to_tensor(p + n, wm, rows, D);
    bt = to_tensor(p + "b" + n.substr(1), bm, 1, rows);
  }

  // The layer's weights with the reduced projections (norms and FFN shared, untouched).
  LayerWeights weights(const LayerWeights& w, int l) const {
    LayerWeights nw = w;
    const std::string p = fmt::format("reduced.layers.{}.", l);
    store(p, "wq", new_wq, int64_t(nh) * hd, nw.wq, nw.bq);
    nw.wo = to_tensor(p + "wo", new_wo, D, int64_t(nh) * hd);
    store(p, "wv", new_wv, int64_t(target) * hd, nw.wv, nw.bv);
    if (compress) {
      nw.wk = w.wk;  // all h heads are still projected; compression happens after RoPE
      nw.k_compress =
          to_tensor(p + "k_compress", k_compress, int64_t(target) * hd, int64_t(t) * hd);
      nw.q_project = to_tensor(p + "q_project", q_project, int64_t(nh) * hd, hd);
    } else {
      store(p, "wk", new_wk, int64_t(target) * hd, nw.wk, nw.bk);
    }
    return nw;
  }
};

}  // namespace

ReducedModel reduce_kv_heads(const Model& m, int target, ReduceMethod method,
                             CalibrationGrams* cal) {
  const ModelConfig& c = m.config;
  // Keys compressed after RoPE: the SVD methods, except the fused variant and models
  // without RoPE (where folding is exact).
  const bool rope = c.positional == PositionalKind::kRope;
  const bool compress = rope && (method == ReduceMethod::kSvdW || method == ReduceMethod::kSvdA);
  const std::string key_tensor = method == ReduceMethod::kSvdAFusedPreRope ? "k_pre_rope" : "k";
  check_reducible(m, target, method, compress, key_tensor, cal);

  ReducedModel r;
  r.method = method;
  r.group = c.n_kv_heads / target;
  r.model.name = fmt::format("{}:{}@{}", m.name, method_name(method), target);
  r.model.format = "memory";
  r.model.source = m.source;
  r.model.files = m.files;
  r.model.config = c;
  r.model.config.n_kv_heads = target;
  r.model.config.k_proj_heads = compress ? c.n_kv_heads : 0;
  r.model.weights.tok_embedding = m.weights.tok_embedding;
  r.model.weights.final_norm = m.weights.final_norm;
  r.model.weights.classifier = m.weights.classifier;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = m.weights.layers[size_t(l)];
    LayerReducer lr(c, method, compress, target, w);
    r.layers.push_back(lr.reduce(l, cal, key_tensor));
    r.model.weights.layers.push_back(lr.weights(w, l));
  }
  check_shapes(r.model);
  return r;
}

}  // namespace kvscope
