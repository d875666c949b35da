// A naive forward pass of a Hugging Face checkpoint directory, transcribed family by family
// from transformers' modelling code (llama, mistral, qwen2, qwen3, gemma2, gemma3_text,
// phi3). It reads config.json itself and the tensors by their checkpoint names, so a
// config field the loader misreads, a fused tensor it splits wrongly or a norm it maps to
// the wrong slot shows up as a difference. Scalar loops in double; short sequences only.
#include "reference_hf.hpp"

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "kvscope/model/safetensors.hpp"

namespace kvscope::test {

namespace {

using Vec = std::vector<double>;
using nlohmann::json;
namespace fs = std::filesystem;

struct Checkpoint {
  json cfg;
  std::map<std::string, Tensor> tensors;
  std::vector<SafetensorsFile> files;  // keep the mappings alive

  bool has(const std::string& n) const { return tensors.count(n) > 0; }
  Vec get(const std::string& n) const {
    auto it = tensors.find(n);
    if (it == tensors.end()) throw std::runtime_error("reference: no tensor " + n);
    const std::vector<float> f = it->second.to_f32();
    return Vec(f.begin(), f.end());
  }
  template <class T>
  T opt(const char* k, T dflt) const {
    return cfg.contains(k) && !cfg[k].is_null() ? cfg[k].get<T>() : dflt;
  }
};

Checkpoint open_checkpoint(const fs::path& dir) {
  Checkpoint ck;
  std::ifstream in(dir / "config.json");
  ck.cfg = json::parse(in);
  std::vector<fs::path> shards;
  if (fs::exists(dir / "model.safetensors.index.json")) {
    std::ifstream ii(dir / "model.safetensors.index.json");
    std::set<std::string> names;
    for (auto& [k, v] : json::parse(ii)["weight_map"].items()) names.insert(v.get<std::string>());
    for (const auto& n : names) shards.push_back(dir / n);
  } else {
    shards.push_back(dir / "model.safetensors");
  }
  for (const auto& p : shards) {
    ck.files.push_back(open_safetensors(p));
    for (auto& [n, e] : ck.files.back().tensors) ck.tensors[n] = e.tensor;
  }
  return ck;
}

Vec linear(const Vec& W, int out, int in, const Vec& x, int x0 = 0) {
  Vec y(size_t(out), 0.0);
  for (int o = 0; o < out; ++o)
    for (int i = 0; i < in; ++i) y[size_t(o)] += W[size_t(o) * in + i] * x[size_t(x0 + i)];
  return y;
}

// LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * w;  GemmaRMSNorm: ... * (1 + w).
Vec norm(const double* x, int n, const Vec& w, double eps, bool gemma) {
  double ms = 0.0;
  for (int i = 0; i < n; ++i) ms += x[i] * x[i];
  ms /= n;
  Vec y(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    y[size_t(i)] = x[i] / std::sqrt(ms + eps) * (gemma ? 1.0 + w[size_t(i)] : w[size_t(i)]);
  return y;
}

// transformers' ROPE_INIT_FUNCTIONS for the types kvscope supports, over `dim` rotary dims.
// Returns inv_freq [dim/2]; *attn_scaling gets the cos/sin multiplier.
Vec inv_freq_for(const json& rs, double base, int dim, int max_pos, int orig_max, int seq_len,
                 double* attn_scaling) {
  *attn_scaling = 1.0;
  Vec inv;
  for (int k = 0; k < dim; k += 2) inv.push_back(1.0 / std::pow(base, double(k) / dim));
  if (rs.is_null()) return inv;
  const std::string type = rs.contains("rope_type") ? rs["rope_type"] : rs["type"];
  if (type == "default") return inv;
  if (type == "linear") {
    for (double& f : inv) f /= rs["factor"].get<double>();
    return inv;
  }
  if (type == "llama3") {
    const double factor = rs["factor"], lo = rs["low_freq_factor"], hi = rs["high_freq_factor"],
                 old = rs["original_max_position_embeddings"];
    for (double& f : inv) {
      const double wl = 2 * M_PI / f;
      if (wl < old / hi) continue;  // high frequency: kept
      if (wl > old / lo) {
        f /= factor;
        continue;
      }  // low frequency: slowed
      const double smooth = (old / wl - lo) / (hi - lo);
      f = (1 - smooth) * f / factor + smooth * f;
    }
    return inv;
  }
  if (type == "longrope") {
    const double factor = double(max_pos) / orig_max;
    *attn_scaling = rs.contains("attention_factor") && !rs["attention_factor"].is_null()
                        ? rs["attention_factor"].get<double>()
                    : factor <= 1.0 ? 1.0
                                    : std::sqrt(1 + std::log(factor) / std::log(double(orig_max)));
    const json& ext = seq_len > orig_max ? rs["long_factor"] : rs["short_factor"];
    for (size_t i = 0; i < inv.size(); ++i) inv[i] /= ext[i].get<double>();
    return inv;
  }
  throw std::runtime_error("reference: rope type " + type);
}

// q_embed = x * cos + rotate_half(x) * sin on the first `dim` entries; the rest pass.
void rope_half(double* x, int dim, int p, const Vec& inv, double scaling) {
  const int half = dim / 2;
  Vec y(static_cast<size_t>(dim));
  for (int i = 0; i < dim; ++i) {
    const double a = p * inv[size_t(i % half)];
    const double rot = i < half ? -x[i + half] : x[i - half];
    y[size_t(i)] = x[i] * std::cos(a) * scaling + rot * std::sin(a) * scaling;
  }
  std::copy(y.begin(), y.end(), x);
}

}  // namespace

ReferenceRun reference_forward_hf(const fs::path& dir, const std::vector<int32_t>& tokens) {
  const Checkpoint ck = open_checkpoint(dir);
  const json& cfg = ck.cfg;
  const std::string type = ck.opt<std::string>("model_type", "llama");
  const bool gemma = type == "gemma2" || type == "gemma3_text", g2 = type == "gemma2";
  const bool phi3 = type == "phi3";
  const int D = cfg["hidden_size"], I = cfg["intermediate_size"], L = cfg["num_hidden_layers"],
            nh = cfg["num_attention_heads"], V = cfg["vocab_size"];
  // Absent keys take the config classes' defaults (Qwen3Config head_dim=128, Gemma*Config
  // head_dim=256, Phi3Config rms_norm_eps=1e-5 and max_position_embeddings=4096,
  // Gemma3TextConfig rope_theta=1e6).
  const int nkv = ck.opt<int>("num_key_value_heads", nh);
  const int hd = ck.opt<int>("head_dim", type == "qwen3" ? 128 : gemma ? 256 : D / nh);
  const double eps = ck.opt<double>("rms_norm_eps", phi3 ? 1e-5 : 1e-6);
  const double theta = ck.opt<double>("rope_theta", type == "gemma3_text" ? 1e6 : 1e4);
  const int max_pos = ck.opt<int>("max_position_embeddings", phi3 ? 4096 : 2048);
  const int rot = phi3 ? int(hd * ck.opt<double>("partial_rotary_factor", 1.0)) : hd;
  const int orig_max = ck.opt<int>("original_max_position_embeddings", phi3 ? 4096 : max_pos);
  const double scaling = gemma ? std::pow(ck.opt<double>("query_pre_attn_scalar", 256), -0.5)
                               : 1.0 / std::sqrt(double(hd));
  auto cap = [&](const char* k, double gemma2_default) {
    if (!cfg.contains(k)) return g2 ? gemma2_default : 0.0;
    return cfg[k].is_null() ? 0.0 : cfg[k].get<double>();
  };
  const double attn_cap = gemma ? cap("attn_logit_softcapping", 50.0) : 0.0;
  const double final_cap = gemma ? cap("final_logit_softcapping", 30.0) : 0.0;
  // Which layers slide, and over how many keys.
  int window = 0;
  if (type == "mistral" || phi3) window = ck.opt<int>("sliding_window", 0);
  if (gemma) window = cfg.contains("sliding_window") ? ck.opt<int>("sliding_window", 0) : 4096;
  const bool qwen = type == "qwen2" || type == "qwen3";
  // Qwen2Config: sliding_window only with use_sliding_window; layers >= max_window_layers.
  if (qwen && ck.opt<bool>("use_sliding_window", false))
    window = cfg.contains("sliding_window") ? ck.opt<int>("sliding_window", 0) : 4096;
  auto sliding = [&](int l) {
    if (qwen && cfg.contains("layer_types") && !cfg["layer_types"].is_null())
      return window > 0 && cfg["layer_types"][size_t(l)] == "sliding_attention";
    if (qwen) return window > 0 && l >= ck.opt<int>("max_window_layers", 28);
    if (!gemma) return window > 0;
    if (cfg.contains("layer_types")) return cfg["layer_types"][size_t(l)] == "sliding_attention";
    if (g2) return l % 2 == 0;  // Gemma2DecoderLayer: is_sliding = not bool(layer_idx % 2)
    return (l + 1) % ck.opt<int>("sliding_window_pattern", 6) != 0;
  };
  const int T = int(tokens.size());
  ReferenceRun r;
  r.T = T;

  const bool has_embed = ck.has("model.embed_tokens.weight");
  const Vec emb = ck.get(has_embed ? "model.embed_tokens.weight" : "lm_head.weight");
  std::vector<Vec> x(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) {
    x[size_t(t)] = Vec(emb.begin() + size_t(tokens[size_t(t)]) * D,
                       emb.begin() + size_t(tokens[size_t(t)] + 1) * D);
    if (gemma)
      for (double& e : x[size_t(t)]) e *= std::sqrt(double(D));
  }
  for (int l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    double rscale = 1.0;
    const bool local = type == "gemma3_text" && sliding(l);
    const Vec inv = local
                        ? inv_freq_for(nullptr, ck.opt<double>("rope_local_base_freq", 1e4), rot,
                                       max_pos, orig_max, T, &rscale)
                        : inv_freq_for(cfg.contains("rope_scaling") ? cfg["rope_scaling"] : json(),
                                       theta, rot, max_pos, orig_max, T, &rscale);
    const int W = sliding(l) ? window : 0;
    Vec Wq, Wk, Wv, Wg, Wu;
    if (phi3) {  // qkv_proj: [q | k | v] along the output; gate_up: chunk(2) -> gate, up
      const Vec qkv = ck.get(p + "self_attn.qkv_proj.weight"),
                gu = ck.get(p + "mlp.gate_up_proj.weight");
      const size_t qn = size_t(nh) * hd * D, kn = size_t(nkv) * hd * D;
      Wq = Vec(qkv.begin(), qkv.begin() + qn);
      Wk = Vec(qkv.begin() + qn, qkv.begin() + qn + kn);
      Wv = Vec(qkv.begin() + qn + kn, qkv.end());
      Wg = Vec(gu.begin(), gu.begin() + size_t(I) * D);
      Wu = Vec(gu.begin() + size_t(I) * D, gu.end());
    } else {
      Wq = ck.get(p + "self_attn.q_proj.weight");
      Wk = ck.get(p + "self_attn.k_proj.weight");
      Wv = ck.get(p + "self_attn.v_proj.weight");
      Wg = ck.get(p + "mlp.gate_proj.weight");
      Wu = ck.get(p + "mlp.up_proj.weight");
    }
    const Vec Wo = ck.get(p + "self_attn.o_proj.weight"), Wd = ck.get(p + "mlp.down_proj.weight");
    const Vec in_norm = ck.get(p + "input_layernorm.weight");
    const Vec post_attn = ck.get(p + "post_attention_layernorm.weight");
    auto bias = [&](const std::string& n, Vec& y) {
      if (!ck.has(n)) return;
      const Vec b = ck.get(n);
      for (size_t i = 0; i < y.size(); ++i) y[i] += b[i];
    };
    Vec& Q = r.q.emplace_back(size_t(nh) * T * hd);
    Vec& Kp = r.k_pre.emplace_back(size_t(nkv) * T * hd);
    Vec& K = r.k.emplace_back(size_t(nkv) * T * hd);
    Vec& Vv = r.v.emplace_back(size_t(nkv) * T * hd);
    for (int t = 0; t < T; ++t) {
      const Vec h = norm(x[size_t(t)].data(), D, in_norm, eps, gemma);
      Vec q = linear(Wq, nh * hd, D, h), k = linear(Wk, nkv * hd, D, h),
          v = linear(Wv, nkv * hd, D, h);
      bias(p + "self_attn.q_proj.bias", q);
      bias(p + "self_attn.k_proj.bias", k);
      bias(p + "self_attn.v_proj.bias", v);
      if (ck.has(p + "self_attn.q_norm.weight")) {  // Qwen3 / Gemma 3: per-head norms
        const Vec qn = ck.get(p + "self_attn.q_norm.weight"),
                  kn = ck.get(p + "self_attn.k_norm.weight");
        for (int a = 0; a < nh; ++a) {
          const Vec y = norm(&q[size_t(a) * hd], hd, qn, eps, gemma);
          std::copy(y.begin(), y.end(), q.begin() + size_t(a) * hd);
        }
        for (int a = 0; a < nkv; ++a) {
          const Vec y = norm(&k[size_t(a) * hd], hd, kn, eps, gemma);
          std::copy(y.begin(), y.end(), k.begin() + size_t(a) * hd);
        }
      }
      for (int a = 0; a < nh; ++a) {
        double* d = &Q[(size_t(a) * T + t) * hd];
        std::copy(q.begin() + size_t(a) * hd, q.begin() + size_t(a + 1) * hd, d);
        rope_half(d, rot, t, inv, rscale);
      }
      for (int a = 0; a < nkv; ++a) {
        std::copy(k.begin() + size_t(a) * hd, k.begin() + size_t(a + 1) * hd,
                  &Kp[(size_t(a) * T + t) * hd]);
        double* d = &K[(size_t(a) * T + t) * hd];
        std::copy(k.begin() + size_t(a) * hd, k.begin() + size_t(a + 1) * hd, d);
        rope_half(d, rot, t, inv, rscale);
        std::copy(v.begin() + size_t(a) * hd, v.begin() + size_t(a + 1) * hd,
                  &Vv[(size_t(a) * T + t) * hd]);
      }
    }
    Vec& A = r.attn.emplace_back(size_t(nh) * T * T, 0.0);
    std::vector<Vec> att(size_t(T), Vec(size_t(nh) * hd, 0.0));
    for (int a = 0; a < nh; ++a) {
      const int g = a / (nh / nkv);
      for (int t = 0; t < T; ++t) {
        Vec s(size_t(T), -std::numeric_limits<double>::infinity());
        for (int j = 0; j <= t; ++j) {
          if (W > 0 && t - j >= W) continue;  // sliding_window_overlay: kv > q - window
          double d = 0;
          for (int i = 0; i < hd; ++i)
            d += Q[(size_t(a) * T + t) * hd + i] * K[(size_t(g) * T + j) * hd + i];
          d *= scaling;
          if (attn_cap > 0) d = std::tanh(d / attn_cap) * attn_cap;
          s[size_t(j)] = d;
        }
        double mx = -1e300, z = 0;
        for (double e : s) mx = std::max(mx, e);
        for (double& e : s) z += (e = std::exp(e - mx));
        for (int j = 0; j <= t; ++j) {
          A[(size_t(a) * T + t) * T + j] = s[size_t(j)] / z;
          for (int i = 0; i < hd; ++i)
            att[size_t(t)][size_t(a * hd + i)] +=
                s[size_t(j)] / z * Vv[(size_t(g) * T + j) * hd + i];
        }
      }
    }
    for (int t = 0; t < T; ++t) {
      Vec o = linear(Wo, D, nh * hd, att[size_t(t)]);
      bias(p + "self_attn.o_proj.bias", o);
      Vec h;
      if (gemma) {
        const Vec po = norm(o.data(), D, post_attn, eps, true);
        for (int i = 0; i < D; ++i) x[size_t(t)][size_t(i)] += po[size_t(i)];
        h = norm(x[size_t(t)].data(), D, ck.get(p + "pre_feedforward_layernorm.weight"), eps, true);
      } else {
        for (int i = 0; i < D; ++i) x[size_t(t)][size_t(i)] += o[size_t(i)];
        h = norm(x[size_t(t)].data(), D, post_attn, eps, false);
      }
      Vec gt = linear(Wg, I, D, h), up = linear(Wu, I, D, h);
      bias(p + "mlp.gate_proj.bias", gt);
      bias(p + "mlp.up_proj.bias", up);
      for (int i = 0; i < I; ++i) {
        const double z = gt[size_t(i)];
        const double act =
            gemma ? 0.5 * z * (1 + std::tanh(std::sqrt(2 / M_PI) * (z + 0.044715 * z * z * z)))
                  : z / (1 + std::exp(-z));
        up[size_t(i)] *= act;
      }
      Vec dn = linear(Wd, D, I, up);
      bias(p + "mlp.down_proj.bias", dn);
      if (gemma)
        dn = norm(dn.data(), D, ck.get(p + "post_feedforward_layernorm.weight"), eps, true);
      for (int i = 0; i < D; ++i) x[size_t(t)][size_t(i)] += dn[size_t(i)];
    }
  }
  const Vec fn = ck.get("model.norm.weight");
  const Vec head = ck.has("lm_head.weight") ? ck.get("lm_head.weight") : emb;
  r.logits.assign(size_t(T) * V, 0.0);
  for (int t = 0; t < T; ++t) {
    const Vec h = norm(x[size_t(t)].data(), D, fn, eps, gemma);
    const Vec lg = linear(head, V, D, h);
    for (int i = 0; i < V; ++i)
      r.logits[size_t(t) * V + i] =
          final_cap > 0 ? std::tanh(lg[size_t(i)] / final_cap) * final_cap : lg[size_t(i)];
  }
  return r;
}

}  // namespace kvscope::test
