// The cache codecs (kv/kv_codec.hpp) against values worked out by hand from ggml's block
// layouts and against implementations written here from the papers' definitions: KIVI's
// per-channel keys and per-token values with group edges and the residual window as tokens
// arrive, pre-RoPE keys with exact outliers, the bytes of each, a low-rank cache at full
// rank (the full cache's logits), and a composition with an identity method.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "kvscope/kv/compressed_run.hpp"
#include "kvscope/kv/kv_codec.hpp"
#include "kvscope/model/dtype.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Matchers::Contains;

namespace {

std::vector<float> round_trip(DType t, const std::vector<float>& x) {
  std::vector<std::byte> b(dtype_block_bytes(t));
  std::vector<float> y(32);
  quantize_blocks(t, x.data(), 1, b.data());
  dequantize_blocks(t, b.data(), 1, y.data());
  return y;
}

std::shared_ptr<const KVCodec> codec(const std::string& method, const std::string& yaml,
                                     const CodecContext& ctx = {}, double share = 1.0) {
  YamlMap keys(parse_yaml_string(yaml, "test"), "test");
  const CodecMethod* m = find_codec_method(method);
  REQUIRE(m);
  auto c = m->make(keys, ctx, share);
  keys.finish();
  return c;
}

// The paper's asymmetric quantization of the entries of x not flagged exact, with the
// scale and minimum held as halves.
void ref_quantize(std::vector<double*> x, int bits, const std::vector<bool>& exact) {
  double lo = 1e300, hi = -1e300;
  for (size_t i = 0; i < x.size(); ++i)
    if (!exact[i]) lo = std::min(lo, *x[i]), hi = std::max(hi, *x[i]);
  if (lo > hi) return;
  const double levels = std::pow(2.0, bits) - 1;
  const double scale = f16_to_f32(f32_to_f16(float((hi - lo) / levels)));
  const double zero = f16_to_f32(f32_to_f16(float(lo)));
  for (size_t i = 0; i < x.size(); ++i) {
    if (exact[i]) continue;
    const double q =
        scale > 0 ? std::min(levels, std::max(0.0, std::round((*x[i] - zero) / scale))) : 0.0;
    *x[i] = q * scale + zero;
  }
}

ModelConfig tiny_config(int hd) {
  ModelConfig c;
  c.dim = hd, c.hidden_dim = 2 * hd, c.n_layers = 1, c.n_heads = 1, c.n_kv_heads = 1;
  c.head_dim = hd, c.vocab_size = 16, c.max_seq_len = 64;
  return c;
}

const Model& model(int kind) {  // 0: MHA hd 8, 1: GQA hd 8, 2: GQA hd 32
  static test::TempDir dir("codec_models");
  static std::map<int, Model> models;
  if (!models.count(kind)) {
    SyntheticSpec s;
    ModelConfig& c = s.config;
    c.head_dim = kind == 2 ? 32 : 8;
    c.dim = 32, c.hidden_dim = 64, c.n_layers = 2, c.n_heads = 4;
    c.n_kv_heads = kind == 0 ? 4 : 2, c.vocab_size = 64, c.max_seq_len = 128;
    s.seed = uint64_t(11 + kind);
    const auto path = dir.path / ("m" + std::to_string(kind));
    write_synthetic_hf_model(path, s);
    models.emplace(kind, load_model(path));
  }
  return models.at(kind);
}

std::vector<int32_t> tokens(int n, uint32_t seed) {
  return test::random_tokens(n, seed);
}

// Logits of `decode` tokens after a prefill, under variant v.
std::vector<std::vector<float>> run(const Model& m, const Variant& v, int prefill, int decode,
                                    double* share = nullptr) {
  const std::vector<int32_t> t = tokens(prefill + decode, 5);
  PolicyNeeds needs;
  if (v.codec) needs = v.codec->needs();
  CompressedRun r(m, prefill + decode, needs, 2,
                  v.codec && v.codec->on_store() ? v.codec : nullptr);
  r.prefill(std::span<const int32_t>(t).subspan(0, size_t(prefill)));
  REQUIRE(r.compress(v, 1));
  if (share) *share = r.share_after_prefill();
  std::vector<std::vector<float>> out;
  for (int i = 0; i < decode; ++i) {
    const auto lg = r.step(t[size_t(prefill + i)]);
    out.emplace_back(lg.begin(), lg.end());
  }
  return out;
}

double max_diff(const std::vector<std::vector<float>>& a,
                const std::vector<std::vector<float>>& b) {
  double d = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < a[i].size(); ++j) d = std::max(d, std::abs(double(a[i][j]) - b[i][j]));
  return d;
}

}  // namespace

TEST_CASE("ggml quantizers: blocks worked out by hand from the layouts", "[codec][quant]") {
  // q8_0: max |x| = 127, so d = 1 and codes are x rounded half away from zero.
  std::vector<float> x(32, 0.0f);
  x[0] = 127, x[1] = -127, x[2] = 0.5f, x[3] = -0.5f, x[4] = 1.49f, x[5] = 2.5f, x[6] = -3.7f;
  std::vector<float> y = round_trip(DType::Q8_0, x);
  const float want8[] = {127, -127, 1, -1, 1, 3, -4};
  for (int i = 0; i < 7; ++i) CHECK(y[size_t(i)] == want8[i]);
  CHECK(y[31] == 0.0f);
  // q4_0: the signed extreme -8 gives d = 1; code = min(15, trunc(x + 8.5)), x' = code - 8.
  std::fill(x.begin(), x.end(), 0.0f);
  x[0] = -8, x[1] = 7.4f, x[2] = 7.6f, x[3] = 0.49f, x[4] = 0.5f, x[5] = -0.5f, x[16] = -2.6f;
  y = round_trip(DType::Q4_0, x);
  const float want4[] = {-8, 7, 7, 0, 1, 0};
  for (int i = 0; i < 6; ++i) CHECK(y[size_t(i)] == want4[i]);
  CHECK(y[16] == -3.0f);  // trunc(-2.6 + 8.5) = 5
  {                       // byte 0 holds element 0 (code 0) low and element 16 (code 5) high
    std::vector<std::byte> b(18);
    quantize_blocks(DType::Q4_0, x.data(), 1, b.data());
    CHECK(uint8_t(b[2]) == 0x50);
    CHECK(uint8_t(b[0]) == 0x00);  // d = 1.0 as a half: 0x3c00, little-endian
    CHECK(uint8_t(b[1]) == 0x3c);
  }
  // A positive extreme 8 gives d = -1: 8 maps to code 0 and back to 8.
  std::fill(x.begin(), x.end(), 0.0f);
  x[0] = 8, x[1] = -7.4f;
  y = round_trip(DType::Q4_0, x);
  CHECK(y[0] == 8.0f);
  CHECK(y[1] == -7.0f);  // code trunc(7.4 + 8.5) = 15, -1 * (15 - 8)
  // q4_1: min 0, max 15, d = 1, code = min(15, trunc(x + 0.5)).
  for (int i = 0; i < 32; ++i) x[size_t(i)] = float(i % 16) + (i >= 16 ? 0.49f : 0.0f);
  x[31] = 15;
  y = round_trip(DType::Q4_1, x);
  for (int i = 0; i < 31; ++i) CHECK(y[size_t(i)] == float(i % 16));
  // q5_0: extreme -16, d = 1, code = min(31, trunc(x + 16.5)); 15.6 rounds to 16 -> 31 cap 15.
  std::fill(x.begin(), x.end(), 0.0f);
  x[0] = -16, x[1] = 15.6f, x[2] = 4.5f, x[20] = -9.2f;
  y = round_trip(DType::Q5_0, x);
  CHECK(y[0] == -16.0f);
  CHECK(y[1] == 15.0f);
  CHECK(y[2] == 5.0f);
  CHECK(y[20] == -9.0f);
  // q5_1: min 0, max 31, d = 1: integers come back, halves round up.
  for (int i = 0; i < 32; ++i) x[size_t(i)] = float(i);
  x[5] = 4.5f;
  y = round_trip(DType::Q5_1, x);
  for (int i = 0; i < 32; ++i) CHECK(y[size_t(i)] == (i == 5 ? 5.0f : float(i)));
  // iq4_nl: x on the levels themselves, extreme -127: d0 = 1, the codes are exact, and the
  // least-squares scale is 1 (then 0.5 for half the values).
  const float levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                            1,    13,   25,  38,  53,  69,  89,  113};
  for (float s : {1.0f, 0.5f}) {
    for (int i = 0; i < 32; ++i) x[size_t(i)] = s * levels[(i * 7) % 16];
    y = round_trip(DType::IQ4_NL, x);
    for (int i = 0; i < 32; ++i) CHECK(y[size_t(i)] == x[size_t(i)]);
  }
  CHECK_THROWS_WITH(quantize_blocks(DType::Q4_K, x.data(), 1, nullptr), Contains("Q4_K"));
}

TEST_CASE("kivi: per-channel keys and per-token values as tokens arrive, against the paper",
          "[codec][kivi]") {
  const int hd = 8, G = 4, R = 8, bits = 2;
  const ModelConfig c = tiny_config(hd);
  KVCache kc(c, 64);
  CodecState st;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<std::vector<float>> K, V;  // every token's original key and value
  auto append = [&](int n) {
    for (int i = 0; i < n; ++i) {
      std::vector<float> k(hd), v(hd);
      for (int e = 0; e < hd; ++e)
        k[size_t(e)] = nd(rng) * (1.0f + float(e)), v[size_t(e)] = nd(rng);
      K.push_back(k), V.push_back(v);
      kc.append(0, k.data(), v.data(), hd, 1);
      kc.commit(1);
    }
  };
  const auto kivi = codec("kivi", "{bits: 2, group: 4, residual: 8}");
  CodecView view;
  view.config = &c, view.cache = &kc, view.state = &st, view.elem_bytes = 2;
  // The reference: keys of tokens [0, floor(n / R) R) per channel in groups of G tokens,
  // values of tokens [0, n - R) per token in runs of G channels; the rest exact.
  auto check = [&](int n) {
    std::vector<std::vector<double>> k(K.size()), v(V.size());
    for (size_t i = 0; i < K.size(); ++i)
      k[i].assign(K[i].begin(), K[i].end()), v[i].assign(V[i].begin(), V[i].end());
    const int qk = n / R * R;
    for (int g0 = 0; g0 < qk; g0 += G)
      for (int e = 0; e < hd; ++e) {
        std::vector<double*> col;
        for (int i = g0; i < g0 + G; ++i) col.push_back(&k[size_t(i)][size_t(e)]);
        ref_quantize(col, bits, std::vector<bool>(size_t(G), false));
      }
    for (int i = 0; i < n - R; ++i)
      for (int e0 = 0; e0 < hd; e0 += G) {
        std::vector<double*> run;
        for (int e = e0; e < e0 + G; ++e) run.push_back(&v[size_t(i)][size_t(e)]);
        ref_quantize(run, bits, std::vector<bool>(size_t(G), false));
      }
    double dk = 0, dv = 0;
    for (int i = 0; i < n; ++i)
      for (int e = 0; e < hd; ++e) {
        dk = std::max(dk, std::abs(kc.k_head(0, 0)[i * hd + e] - k[size_t(i)][size_t(e)]));
        dv = std::max(dv, std::abs(kc.v_head(0, 0)[i * hd + e] - v[size_t(i)][size_t(e)]));
      }
    CHECK(dk < 1e-6);  // float against double arithmetic on the same codes
    CHECK(dv < 1e-6);
    // Bytes by hand: a key group holds hd scales and minimums (2 bytes each) plus
    // 2-bit codes per token; a value slot its codes plus hd/G scale-minimum pairs.
    const int64_t want = int64_t(qk / G) * hd * 4 + int64_t(qk) * hd * bits / 8 +
                         int64_t(n - qk) * hd * 2 + int64_t(n - R) * (hd * bits / 8 + hd / G * 4) +
                         int64_t(R) * hd * 2;
    CHECK(st.bytes(kc, 2) == want);
  };
  append(37);
  kivi->encode(view);
  check(37);  // 32 keys in 8 groups, 5 exact; 29 values quantized
  for (int n = 38; n <= 41; ++n) {
    append(1);
    kivi->encode(view);
    check(n);  // at 40 the 8 newest keys are grouped at once, from their own values
  }
  // Group edges: a residual that is not a multiple of the group is refused by name.
  YamlMap bad(parse_yaml_string("{group: 3, residual: 8}", "bad.yaml"), "bad.yaml");
  CHECK_THROWS_WITH(find_codec_method("kivi")->make(bad, {}, 1.0), Contains("residual"));
}

TEST_CASE("kvquant: keys quantized before RoPE with the largest 1% held exactly",
          "[codec][kvquant]") {
  const int hd = 8, G = 32;
  ModelConfig c = tiny_config(hd);
  KVCache kc(c, 64);
  CodecState st;
  RopeAngles a;
  std::vector<double> inv(static_cast<size_t>(hd / 2));
  for (int i = 0; i < hd / 2; ++i) inv[size_t(i)] = std::pow(10000.0, -2.0 * i / hd);
  rope_angles(64, inv, 1.0, a);
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Pre-RoPE keys with three planted outliers (256 entries, 1% -> round(2.56) = 3).
  std::vector<std::vector<double>> pre(G, std::vector<double>(hd));
  for (auto& r : pre)
    for (double& e : r) e = nd(rng);
  pre[3][1] = 40, pre[17][6] = -35, pre[30][0] = 30;
  // The cache holds them rotated by position (adjacent pairs), computed here in double.
  auto rotate = [&](std::vector<double> x, int pos, bool inverse) {
    for (int i = 0; i < hd / 2; ++i) {
      const double th = pos * inv[size_t(i)] * (inverse ? -1 : 1);
      const double x0 = x[size_t(2 * i)], x1 = x[size_t(2 * i + 1)];
      x[size_t(2 * i)] = x0 * std::cos(th) - x1 * std::sin(th);
      x[size_t(2 * i + 1)] = x0 * std::sin(th) + x1 * std::cos(th);
    }
    return x;
  };
  for (int i = 0; i < G; ++i) {
    const std::vector<double> r = rotate(pre[size_t(i)], i, false);
    std::vector<float> k(r.begin(), r.end()), v(hd, 0.5f);
    kc.append(0, k.data(), v.data(), hd, 1);
    kc.commit(1);
  }
  const auto kvq = codec("kvquant", "{bits: 3, group: 32}");
  CodecView view;
  view.config = &c, view.cache = &kc, view.state = &st, view.elem_bytes = 2;
  view.rope[0] = &a;
  kvq->encode(view);
  // The reference: per channel over the 32 tokens, the outliers left out and kept.
  std::vector<std::vector<bool>> exact(G, std::vector<bool>(hd, false));
  exact[3][1] = exact[17][6] = exact[30][0] = true;
  std::vector<std::vector<double>> want = pre;
  for (int e = 0; e < hd; ++e) {
    std::vector<double*> col;
    std::vector<bool> ex;
    for (int i = 0; i < G; ++i)
      col.push_back(&want[size_t(i)][size_t(e)]), ex.push_back(exact[size_t(i)][size_t(e)]);
    ref_quantize(col, 3, ex);
  }
  double d = 0, d_outlier = 0;
  for (int i = 0; i < G; ++i) {
    const std::vector<double> w = rotate(want[size_t(i)], i, false);
    for (int e = 0; e < hd; ++e)
      d = std::max(d, std::abs(kc.k_head(0, 0)[i * hd + e] - w[size_t(e)]));
    // Back before RoPE, the outliers are the planted values.
    std::vector<double> got(kc.k_head(0, 0) + i * hd, kc.k_head(0, 0) + (i + 1) * hd);
    got = rotate(got, i, true);
    for (int e = 0; e < hd; ++e)
      if (exact[size_t(i)][size_t(e)])
        d_outlier = std::max(d_outlier, std::abs(got[size_t(e)] - pre[size_t(i)][size_t(e)]));
  }
  CHECK(d < 1e-4);          // float rotations against double ones
  CHECK(d_outlier < 1e-4);  // the outliers are not quantized (3 bits would be off by ~10)
  // Bytes: 3-bit codes, hd scale-minimum pairs, 3 outliers of 2 + 4 bytes; values 3-bit
  // per token (no residual) with one run of 8 channels, no outlier (round(0.08) = 0).
  CHECK(st.bytes(kc, 2) == G * 3 + hd * 4 + 3 * 6 + G * (3 + 4));
}

TEST_CASE("a low-rank cache at full rank gives the full cache's logits", "[codec][lowrank]") {
  for (int kind : {0, 1}) {
    const Model& m = model(kind);
    CalibrationOptions o;
    o.tokens = 512, o.seq_len = 64, o.tensors = {"k_pre_rope", "k", "v"};
    const std::vector<int32_t> stream = tokens(1024, 17);
    CalibrationGrams g = collect_grams(m, m.config.bos_id, stream, o);
    Variant full;
    full.name = "full";
    const auto ref = run(m, full, 40, 8);
    for (const char* yaml : {"{}", "{heads: 1}"}) {
      INFO("model " << kind << " keys " << yaml);
      Variant lr;
      lr.name = "lowrank";
      lr.codec = codec("lowrank", yaml, CodecContext{&m, &g}, 1.0);
      double share = 0;
      CHECK(max_diff(run(m, lr, 40, 8, &share), ref) < 1e-5);
      CHECK(share == 1.0);
      // At half the rank the logits move and the latents hold half the bytes.
      lr.codec = codec("lowrank", yaml, CodecContext{&m, &g}, 0.5);
      CHECK(max_diff(run(m, lr, 40, 8, &share), ref) > 1e-3);
      CHECK(share == 0.5);
    }
  }
}

TEST_CASE("a composition with an identity eviction equals the codec alone", "[codec][compose]") {
  const Model& m = model(1);
  YamlMap none(parse_yaml_string("{}", "test"), "test");
  std::shared_ptr<const EvictionPolicy> streaming =
      eviction_method("streaming", "test").make(none, PolicyContext{});
  Variant alone, both;
  alone.name = "kivi", both.name = "streaming+kivi";
  alone.codec = both.codec = codec("kivi", "{bits: 4, group: 4, residual: 8}");
  both.policy = streaming, both.share = 1.0;  // keeps every slot
  double sa = 0, sb = 0;
  const auto a = run(m, alone, 40, 8, &sa), b = run(m, both, 40, 8, &sb);
  CHECK(max_diff(a, b) == 0.0);
  CHECK(sa == sb);
  // And kivi moves the logits (the identity is not vacuous).
  Variant full;
  CHECK(max_diff(a, run(m, full, 40, 8)) > 1e-4);
}

TEST_CASE("llama.cpp cache types: stored as written, bytes of the block, refused below 32",
          "[codec][ggml]") {
  const Model& m = model(2);
  Variant q8, full;
  q8.name = "q8_0", q8.codec = codec("q8_0", "{}");
  double share = 0;
  const auto a = run(m, q8, 40, 6, &share), ref = run(m, full, 40, 6);
  CHECK(share == 34.0 / 64.0);  // 34 bytes per 32 elements against 16-bit elements
  const double d = max_diff(a, ref);
  CHECK(d > 0.0);
  CHECK(d < 0.05);
  // Keys q4_0 and values q8_0 hold (18 + 34) / 128 of the 16-bit cache.
  Variant mixed;
  mixed.name = "mixed", mixed.codec = codec("ggml", "{k_type: q4_0, v_type: q8_0}");
  run(m, mixed, 40, 2, &share);
  CHECK(share == (18.0 + 34.0) / 128.0);
  CHECK_THAT(q8.codec->unreachable(model(0).config), Contains("head_dim 8"));
  YamlMap bad(parse_yaml_string("{k_type: q3_k}", "bad.yaml"), "bad.yaml");
  CHECK_THROWS_WITH(find_codec_method("ggml")->make(bad, {}, 1.0), Contains("k_type"));
}

TEST_CASE("think: the kept key channels are those of largest query-weighted magnitude",
          "[codec][think]") {
  const Model& m = model(0);
  Variant full, think;
  think.name = "think";
  think.codec = codec("think", "{window: 8}", {}, 1.0);
  CHECK(max_diff(run(m, think, 40, 4), run(m, full, 40, 4)) == 0.0);
  think.codec = codec("think", "{window: 8}", {}, 0.5);
  // After the prefill every key of the prefill has exactly hd / 2 channels left.
  const std::vector<int32_t> t = tokens(40, 5);
  CompressedRun r(m, 48, think.codec->needs(), 2);
  r.prefill(t);
  REQUIRE(r.compress(think, 1));
  const KVCache& kc = r.state().cache;
  for (int l = 0; l < kc.n_layers(); ++l)
    for (int g = 0; g < kc.n_kv_heads(); ++g)
      for (int i = 0; i < 40; ++i) {
        int nonzero = 0;
        for (int e = 0; e < 8; ++e) nonzero += kc.k_head(l, g)[i * 8 + e] != 0.0f;
        CHECK(nonzero == 4);
      }
  // Keys (half of 8 channels at 2 bytes + a 1-byte mask per head) and whole values.
  CHECK(r.share_after_prefill() == (40.0 * 8 * (4 * 2 + 8 * 2) + 8 * 1) / (40.0 * 8 * 2 * 8 * 2));
}

TEST_CASE("think: the channels kept are the ones a reimplementation from the paper keeps",
          "[codec][think]") {
  // Logs every layer's post-RoPE queries and keys of one prefill.
  struct Log : ForwardObserver {
    std::vector<std::vector<float>> q, k;  // [layer][heads * T * hd]
    int T = 0;
    void on_layer(const LayerCapture& c) override {
      if (q.size() <= size_t(c.layer)) q.resize(size_t(c.layer) + 1), k.resize(size_t(c.layer) + 1);
      T = c.n_tokens;
      q[size_t(c.layer)].assign(c.q, c.q + size_t(c.n_heads) * c.n_tokens * c.head_dim);
      k[size_t(c.layer)].assign(c.k, c.k + size_t(c.n_kv_heads) * c.n_tokens * c.head_dim);
    }
  };
  for (int kind : {0, 1}) {  // MHA, and GQA (two query heads per KV head)
    const Model& m = model(kind);
    const ModelConfig& c = m.config;
    const int hd = c.head_dim, W = 8, keep = 3, P = 40;
    const std::vector<int32_t> t = tokens(P, 23);
    Log log;
    RunState st(c, P);
    ForwardOptions o;
    o.logits = LogitsMode::kNone, o.observer = &log;
    forward(m, st, t, o);
    Variant think;
    think.name = "think";
    think.codec = codec("think", "{window: 8}", {}, double(keep) / hd);
    CompressedRun r(m, P, think.codec->needs(), 2);
    r.prefill(t);
    REQUIRE(r.compress(think, 1));
    const KVCache& kc = r.state().cache;
    for (int l = 0; l < c.n_layers; ++l)
      for (int g = 0; g < c.n_kv_heads; ++g) {
        // ||Q[:, ch]|| over the last W queries of the group's heads, ||K[:, ch]|| over all keys.
        std::vector<std::pair<double, int>> score;
        for (int ch = 0; ch < hd; ++ch) {
          double qq = 0, kk = 0;
          for (int h = g * c.group_size(); h < (g + 1) * c.group_size(); ++h)
            for (int i = P - W; i < P; ++i)
              qq += std::pow(log.q[size_t(l)][(size_t(h) * P + i) * hd + ch], 2);
          for (int i = 0; i < P; ++i)
            kk += std::pow(log.k[size_t(l)][(size_t(g) * P + i) * hd + ch], 2);
          score.push_back({-std::sqrt(qq * kk), ch});  // ascending sort: largest first
        }
        std::sort(score.begin(), score.end());
        std::vector<bool> kept(static_cast<size_t>(hd), false);
        for (int i = 0; i < keep; ++i) kept[size_t(score[size_t(i)].second)] = true;
        INFO("model " << kind << " layer " << l << " head " << g);
        for (int i = 0; i < P; ++i)
          for (int ch = 0; ch < hd; ++ch) {
            const float want =
                kept[size_t(ch)] ? log.k[size_t(l)][(size_t(g) * P + i) * hd + ch] : 0.0f;
            CHECK(kc.k_head(l, g)[i * hd + ch] == want);
          }
      }
  }
}
