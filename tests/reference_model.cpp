#include "reference_model.hpp"

#include <cmath>
#include <complex>
#include <limits>

namespace kvscope::test {

namespace {

using Vec = std::vector<double>;

Vec widen(const Tensor& t) {
  std::vector<float> f = t.to_f32();
  return Vec(f.begin(), f.end());
}

// y[o] = sum_i W[o][i] x[i]
Vec matvec(const Vec& W, int out, int in, const double* x) {
  Vec y(size_t(out), 0.0);
  for (int o = 0; o < out; ++o) {
    double s = 0.0;
    for (int i = 0; i < in; ++i) s += W[size_t(o) * in + i] * x[i];
    y[size_t(o)] = s;
  }
  return y;
}

// y += b, when the model has that bias (an empty tensor means none).
void plus_bias(Vec& y, const Tensor& b) {
  if (b.empty()) return;
  const Vec bb = widen(b);
  for (size_t i = 0; i < y.size(); ++i) y[i] += bb[i];
}

Vec rmsnorm(const double* x, const Vec& w, int n, double eps) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const double inv = 1.0 / std::sqrt(ss / n + eps);
  Vec y(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) y[size_t(i)] = x[i] * inv * w[size_t(i)];
  return y;
}

double alibi_slope_ref(int h, int n) {
  // Press et al.'s get_slopes, recursively as in their code.
  auto pow2 = [](int k) {
    Vec s;
    const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(double(k)) - 3)));
    for (int i = 0; i < k; ++i) s.push_back(std::pow(start, i + 1));
    return s;
  };
  if ((n & (n - 1)) == 0) return pow2(n)[size_t(h)];
  const int closest = 1 << int(std::floor(std::log2(double(n))));
  Vec s = pow2(closest);
  Vec extra = pow2(2 * closest);
  for (size_t i = 0; i < extra.size() && int(s.size()) < n; i += 2) s.push_back(extra[i]);
  return s[size_t(h)];
}

}  // namespace

// RoPE on one head vector at position p, written two different ways from src/runtime/ops.cpp:
// adjacent pairs as complex multiplication (Meta's reference), rotate-half as
// x*cos + rotate_half(x)*sin with duplicated frequencies (Hugging Face's reference).
void rope_ref(double* x, int hd, int p, const std::vector<double>& inv_freq, RopeLayout layout) {
  const int half = hd / 2;
  if (layout == RopeLayout::kAdjacentPairs) {
    for (int i = 0; i < half; ++i) {
      const std::complex<double> z(x[2 * i], x[2 * i + 1]);
      const std::complex<double> r = z * std::polar(1.0, p * inv_freq[size_t(i)]);
      x[2 * i] = r.real();
      x[2 * i + 1] = r.imag();
    }
  } else {
    Vec cosv(static_cast<size_t>(hd)), sinv(static_cast<size_t>(hd)), rot(static_cast<size_t>(hd));
    for (int i = 0; i < hd; ++i) {
      const double freq = inv_freq[size_t(i % half)];  // emb = cat(freqs, freqs)
      cosv[size_t(i)] = std::cos(p * freq);
      sinv[size_t(i)] = std::sin(p * freq);
      rot[size_t(i)] = i < half ? -x[i + half] : x[i - half];
    }
    for (int i = 0; i < hd; ++i) x[i] = x[i] * cosv[size_t(i)] + rot[size_t(i)] * sinv[size_t(i)];
  }
}

void rope_ref(double* x, int hd, int p, double theta, RopeLayout layout) {
  Vec f(size_t(hd / 2));
  for (int i = 0; i < hd / 2; ++i) f[size_t(i)] = 1.0 / std::pow(theta, double(2 * i) / hd);
  rope_ref(x, hd, p, f, layout);
}

std::vector<double> ref_inv_freq(const ModelConfig& c) {
  const int dim = c.head_dim;
  // inv_freq = 1 / base ** (arange(0, dim, 2) / dim)
  Vec inv;
  for (int k = 0; k < dim; k += 2)
    inv.push_back(1.0 / std::pow(double(c.rope_theta), double(k) / dim));
  const RopeScaling& rs = c.rope_scaling;
  if (rs.kind == RopeScalingKind::kLinear)  // the positions / factor, i.e. freqs / factor
    for (double& f : inv) f /= rs.factor;
  if (rs.kind == RopeScalingKind::kLlama3) {
    const double old_ctx = rs.original_max_position;
    const double low_wl = old_ctx / rs.low_freq_factor, high_wl = old_ctx / rs.high_freq_factor;
    Vec wavelen, llama(inv.size());
    for (double f : inv) wavelen.push_back(2 * M_PI / f);
    // inv_freq_llama = where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    for (size_t i = 0; i < inv.size(); ++i)
      llama[i] = wavelen[i] > low_wl ? inv[i] / rs.factor : inv[i];
    // smoothed for the medium band: !(wavelen < high) && !(wavelen > low)
    for (size_t i = 0; i < inv.size(); ++i) {
      const double smooth =
          (old_ctx / wavelen[i] - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
      const double smoothed = (1 - smooth) * llama[i] / rs.factor + smooth * llama[i];
      if (!(wavelen[i] < high_wl) && !(wavelen[i] > low_wl)) llama[i] = smoothed;
    }
    inv = llama;
  }
  return inv;
}

ReferenceRun reference_forward(const Model& m, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = m.config;
  const int T = int(tokens.size()), D = c.dim, hd = c.head_dim, nh = c.n_heads, nkv = c.n_kv_heads,
            H = c.hidden_dim, V = c.vocab_size;
  ReferenceRun r;
  r.T = T;
  const Vec inv_freq = ref_inv_freq(c);
  const Vec emb = widen(m.weights.tok_embedding);
  std::vector<Vec> x(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t)
    x[size_t(t)] = Vec(emb.begin() + size_t(tokens[size_t(t)]) * D,
                       emb.begin() + size_t(tokens[size_t(t)] + 1) * D);

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = m.weights.layers[size_t(l)];
    const Vec an = widen(lw.attn_norm), wq = widen(lw.wq), wk = widen(lw.wk), wv = widen(lw.wv),
              wo = widen(lw.wo), fn = widen(lw.ffn_norm), wg = widen(lw.w_gate),
              wu = widen(lw.w_up), wd = widen(lw.w_down);
    Vec& Q = r.q.emplace_back(size_t(nh) * T * hd);
    Vec& Kp = r.k_pre.emplace_back(size_t(nkv) * T * hd);
    Vec& K = r.k.emplace_back(size_t(nkv) * T * hd);
    Vec& Vv = r.v.emplace_back(size_t(nkv) * T * hd);
    for (int t = 0; t < T; ++t) {
      const Vec xn = rmsnorm(x[size_t(t)].data(), an, D, c.norm_eps);
      Vec q = matvec(wq, nh * hd, D, xn.data());
      Vec k = matvec(wk, nkv * hd, D, xn.data());
      Vec v = matvec(wv, nkv * hd, D, xn.data());
      plus_bias(q, lw.bq);  // nn.Linear(bias=True): x W^T + b, before RoPE
      plus_bias(k, lw.bk);
      plus_bias(v, lw.bv);
      if (c.qk_norm) {  // Qwen3: RMSNorm of each head vector (q_norm / k_norm), before RoPE
        const Vec qn = widen(lw.q_norm), kn = widen(lw.k_norm);
        for (int h = 0; h < nh; ++h) {
          const Vec y = rmsnorm(&q[size_t(h) * hd], qn, hd, c.norm_eps);
          std::copy(y.begin(), y.end(), q.begin() + size_t(h) * hd);
        }
        for (int g = 0; g < nkv; ++g) {
          const Vec y = rmsnorm(&k[size_t(g) * hd], kn, hd, c.norm_eps);
          std::copy(y.begin(), y.end(), k.begin() + size_t(g) * hd);
        }
      }
      for (int h = 0; h < nh; ++h) {
        double* dst = &Q[(size_t(h) * T + t) * hd];
        for (int i = 0; i < hd; ++i) dst[i] = q[size_t(h * hd + i)];
        if (c.positional == PositionalKind::kRope) rope_ref(dst, hd, t, inv_freq, c.rope_layout);
      }
      for (int g = 0; g < nkv; ++g) {
        for (int i = 0; i < hd; ++i) {
          Kp[(size_t(g) * T + t) * hd + i] = k[size_t(g * hd + i)];
          K[(size_t(g) * T + t) * hd + i] = k[size_t(g * hd + i)];
          Vv[(size_t(g) * T + t) * hd + i] = v[size_t(g * hd + i)];
        }
        if (c.positional == PositionalKind::kRope)
          rope_ref(&K[(size_t(g) * T + t) * hd], hd, t, inv_freq, c.rope_layout);
      }
    }
    // Causal attention, query head h reads KV head h / (nh / nkv).
    std::vector<Vec> att(size_t(T), Vec(size_t(nh) * hd, 0.0));
    Vec& A = r.attn.emplace_back(size_t(nh) * T * T, 0.0);
    for (int h = 0; h < nh; ++h) {
      const int g = h / (nh / nkv);
      const double slope = c.positional == PositionalKind::kAlibi ? alibi_slope_ref(h, nh) : 0.0;
      for (int t = 0; t < T; ++t) {
        Vec s(size_t(t) + 1);
        double mx = -1e300;
        // Mistral: keys at positions t - W + 1 .. t only (masked to -inf before the softmax).
        const int W = c.sliding_window;
        for (int j = 0; j <= t; ++j) {
          if (W > 0 && t - j >= W) {
            s[size_t(j)] = -std::numeric_limits<double>::infinity();
            continue;
          }
          double d = 0.0;
          for (int i = 0; i < hd; ++i)
            d += Q[(size_t(h) * T + t) * hd + i] * K[(size_t(g) * T + j) * hd + i];
          s[size_t(j)] = d / std::sqrt(double(hd)) - slope * (t - j);
          mx = std::max(mx, s[size_t(j)]);
        }
        double z = 0.0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (int j = 0; j <= t; ++j) A[(size_t(h) * T + t) * T + j] = s[size_t(j)] / z;
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hd; ++i)
            att[size_t(t)][size_t(h * hd + i)] +=
                s[size_t(j)] / z * Vv[(size_t(g) * T + j) * hd + i];
      }
    }
    for (int t = 0; t < T; ++t) {
      Vec o = matvec(wo, D, nh * hd, att[size_t(t)].data());
      plus_bias(o, lw.bo);
      for (int i = 0; i < D; ++i) x[size_t(t)][size_t(i)] += o[size_t(i)];
      const Vec xn = rmsnorm(x[size_t(t)].data(), fn, D, c.norm_eps);
      Vec g = matvec(wg, H, D, xn.data());
      Vec u = matvec(wu, H, D, xn.data());
      plus_bias(g, lw.b_gate);
      plus_bias(u, lw.b_up);
      Vec h(static_cast<size_t>(H));
      for (int i = 0; i < H; ++i) {
        const double a = g[size_t(i)];
        h[size_t(i)] = a / (1.0 + std::exp(-a)) * u[size_t(i)];
      }
      Vec dn = matvec(wd, D, H, h.data());
      plus_bias(dn, lw.b_down);
      for (int i = 0; i < D; ++i) x[size_t(t)][size_t(i)] += dn[size_t(i)];
    }
  }
  const Vec nf = widen(m.weights.final_norm), wc = widen(m.weights.classifier);
  r.logits.resize(size_t(T) * V);
  for (int t = 0; t < T; ++t) {
    const Vec xn = rmsnorm(x[size_t(t)].data(), nf, D, c.norm_eps);
    const Vec lg = matvec(wc, V, D, xn.data());
    std::copy(lg.begin(), lg.end(), r.logits.begin() + size_t(t) * V);
  }
  return r;
}

double rel_error(const float* a, const double* b, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace kvscope::test
