// The training backward pass against finite differences, in double precision: each op
// alone, then a whole two-layer model for every positional kind, GQA and MHA, tied and
// separate classifier (relative L2 error of the gradient below 1e-6). And the training
// forward pass against the runtime one (an independent implementation) on a shipped model.
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <random>
#include <set>

#include "kvscope/kv/kv_reduction.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "kvscope/train/train_model.hpp"
#include "kvscope/train/train_ops.hpp"
#include "kvscope/train/trainer.hpp"
#include "test_util.hpp"

using namespace kvscope;
using namespace kvscope::train;

namespace {

constexpr double kTol = 1e-6;  // relative L2 error of analytic vs central-difference gradient

std::vector<double> randn(size_t n, uint32_t seed, double sd = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, sd);
  std::vector<double> v(n);
  for (double& x : v) x = d(rng);
  return v;
}

// ||a - b|| / ||b||
double rel(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return std::sqrt(num / std::max(den, 1e-300));
}

// Central differences of f with respect to `target` (which f reads), one coordinate at a time.
std::vector<double> numeric_grad(const std::function<double()>& f, std::vector<double>& target,
                                 double eps = 1e-6) {
  std::vector<double> g(target.size());
  for (size_t i = 0; i < target.size(); ++i) {
    const double x0 = target[i];
    target[i] = x0 + eps;
    const double up = f();
    target[i] = x0 - eps;
    const double down = f();
    target[i] = x0;
    g[i] = (up - down) / (2 * eps);
  }
  return g;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST_CASE("train ops: backward equals finite differences (double)", "[train]") {
  const int S = 5, D = 6, O = 4;
  SECTION("matmul") {
    auto x = randn(S * D, 1), W = randn(O * D, 2), u = randn(S * O, 3);
    std::vector<double> y(S * O);
    auto f = [&] {
      matmul_fw(x.data(), S, D, W.data(), O, y.data());
      return dot(u, y);
    };
    std::vector<double> dx(x.size()), dW(W.size());
    matmul_bw(u.data(), x.data(), S, D, W.data(), O, dx.data(), dW.data());
    CHECK(rel(dx, numeric_grad(f, x)) < kTol);
    CHECK(rel(dW, numeric_grad(f, W)) < kTol);
  }
  SECTION("per-group matmul (compressed keys)") {
    const int groups = 3, in = 4, out = 2;
    auto x = randn(S * groups * in, 4), W = randn(groups * out * in, 5),
         u = randn(S * groups * out, 6);
    std::vector<double> y(S * groups * out);
    auto f = [&] {
      group_matmul_fw(x.data(), S, groups, in, W.data(), out, y.data());
      return dot(u, y);
    };
    std::vector<double> dx(x.size()), dW(W.size());
    group_matmul_bw(u.data(), x.data(), S, groups, in, W.data(), out, dx.data(), dW.data());
    CHECK(rel(dx, numeric_grad(f, x)) < kTol);
    CHECK(rel(dW, numeric_grad(f, W)) < kTol);
    // Forward by hand: y[t, j*out + a] = sum_b W[j*out + a, b] x[t, j*in + b].
    f();
    const int t = 3, j = 2, a = 1;
    double want = 0;
    for (int b = 0; b < in; ++b)
      want += W[size_t((j * out + a) * in + b)] * x[size_t(t * groups * in + j * in + b)];
    CHECK(y[size_t(t * groups * out + j * out + a)] == Approx(want).epsilon(1e-12));
  }
  SECTION("rmsnorm") {
    auto x = randn(S * D, 4), g = randn(D, 5), u = randn(S * D, 6);
    std::vector<double> y(S * D), r(S);
    auto f = [&] {
      rmsnorm_fw(x.data(), g.data(), S, D, 1e-5, y.data(), r.data());
      return dot(u, y);
    };
    f();
    std::vector<double> dx(x.size()), dg(g.size());
    rmsnorm_bw(u.data(), x.data(), g.data(), r.data(), S, D, dx.data(), dg.data());
    CHECK(rel(dx, numeric_grad(f, x)) < kTol);
    CHECK(rel(dg, numeric_grad(f, g)) < kTol);
  }
  SECTION("rope, both layouts") {
    std::vector<double> inv_freq;
    for (int i = 0; i < 4; ++i) inv_freq.push_back(std::pow(10000.0, -2.0 * i / 8));
    for (RopeLayout layout : {RopeLayout::kAdjacentPairs, RopeLayout::kRotateHalf}) {
      auto x = randn(S * 2 * 8, 7), u = randn(S * 2 * 8, 8);
      auto f = [&] {
        auto y = x;
        rope(y.data(), S, 2, 8, inv_freq, layout, false);
        return dot(u, y);
      };
      auto dx = u;
      rope(dx.data(), S, 2, 8, inv_freq, layout, true);
      CHECK(rel(dx, numeric_grad(f, x)) < kTol);
      auto y = x;  // inverse undoes forward
      rope(y.data(), S, 2, 8, inv_freq, layout, false);
      rope(y.data(), S, 2, 8, inv_freq, layout, true);
      CHECK(rel(y, x) < 1e-12);
    }
  }
  SECTION("causal attention: GQA and MHA, with and without ALiBi") {
    for (int G : {2, 4})
      for (bool alibi : {false, true}) {
        const int H = 4, hd = 3;
        auto q = randn(S * H * hd, 9), k = randn(S * G * hd, 10), v = randn(S * G * hd, 11),
             u = randn(S * H * hd, 12);
        std::vector<double> p(H * S * S), o(S * H * hd);
        auto f = [&] {
          attention_fw(q.data(), k.data(), v.data(), S, H, G, hd, alibi, p.data(), o.data());
          return dot(u, o);
        };
        f();
        std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
        attention_bw(u.data(), q.data(), k.data(), v.data(), p.data(), S, H, G, hd, dq.data(),
                     dk.data(), dv.data());
        INFO("G " << G << " alibi " << alibi);
        CHECK(rel(dq, numeric_grad(f, q)) < kTol);
        CHECK(rel(dk, numeric_grad(f, k)) < kTol);
        CHECK(rel(dv, numeric_grad(f, v)) < kTol);
      }
  }
  SECTION("swiglu and cross-entropy") {
    auto a = randn(S * D, 13), b = randn(S * D, 14), u = randn(S * D, 15);
    std::vector<double> g(S * D);
    auto f = [&] {
      swiglu_fw(a.data(), b.data(), S * D, g.data());
      return dot(u, g);
    };
    std::vector<double> da(a.size()), db(b.size());
    swiglu_bw(u.data(), a.data(), b.data(), S * D, da.data(), db.data());
    CHECK(rel(da, numeric_grad(f, a)) < kTol);
    CHECK(rel(db, numeric_grad(f, b)) < kTol);
    auto logits = randn(S * 7, 16, 2.0);
    const std::vector<int32_t> targets = {3, 0, -1, 6, 2};
    auto ce = [&] {
      return cross_entropy(logits.data(), targets.data(), S, 7, 1.0, (double*)nullptr);
    };
    std::vector<double> dl(logits.size());
    cross_entropy(logits.data(), targets.data(), S, 7, 1.0, dl.data());
    CHECK(rel(dl, numeric_grad(ce, logits)) < kTol);
    // By hand: uniform logits over 7 classes cost log 7 per scored row.
    std::vector<double> flat(S * 7, 0.5);
    CHECK(cross_entropy(flat.data(), targets.data(), S, 7, 1.0, (double*)nullptr) ==
          Approx(4 * std::log(7.0)).epsilon(1e-12));
  }
}

TEST_CASE("whole-model gradient equals finite differences (double), every positional kind",
          "[train]") {
  struct Case {
    const char* what;
    PositionalKind pos;
    RopeLayout layout;
    int kv_heads;
    bool tied;
    int k_proj_heads = 0;  // > 0: keys compressed after RoPE (a reduced model)
  };
  const Case cases[] = {
      {"RoPE adjacent, GQA, tied", PositionalKind::kRope, RopeLayout::kAdjacentPairs, 2, true},
      {"RoPE rotate-half, MHA, untied", PositionalKind::kRope, RopeLayout::kRotateHalf, 4, false},
      {"ALiBi, GQA, untied", PositionalKind::kAlibi, RopeLayout::kAdjacentPairs, 2, false},
      {"no positions, MHA, tied", PositionalKind::kNone, RopeLayout::kAdjacentPairs, 4, true},
      {"RoPE rotate-half, keys compressed 4 -> 2 after RoPE", PositionalKind::kRope,
       RopeLayout::kRotateHalf, 2, false, 4},
  };
  for (const Case& k : cases) {
    INFO(k.what);
    ModelConfig c;
    c.dim = 8, c.hidden_dim = 12, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = k.kv_heads;
    c.head_dim = 4, c.vocab_size = 13, c.max_seq_len = 16, c.positional = k.pos;
    c.rope_layout = k.layout, c.tied_embeddings = k.tied, c.k_proj_heads = k.k_proj_heads;
    const Layout L = make_layout(c);
    // Weights larger than init's 0.02 so that every path carries gradient.
    const std::vector<float> w0 = init_params(L, 3);
    std::vector<double> w(w0.begin(), w0.end());
    const auto noise = randn(w.size(), 17, 0.3);
    for (size_t i = 0; i < w.size(); ++i) w[i] = (w0[i] == 1.0f) ? 1.0 + noise[i] * 0.3 : noise[i];
    const std::vector<int32_t> tokens = {1, 5, 9, 2, 12, 7, 5};
    Workspace<double> ws;
    std::vector<double> grad(w.size(), 0.0);
    loss_and_grad(L, w.data(), tokens, grad.data(), 1.0, ws);
    auto f = [&] { return loss_and_grad(L, w.data(), tokens, (double*)nullptr, 1.0, ws); };
    const std::vector<double> num = numeric_grad(f, w);
    CHECK(rel(grad, num) < kTol);
    // And per tensor, so one wrong tensor cannot hide in the total.
    for (const TensorSpec& t : L.tensors) {
      std::vector<double> a(grad.begin() + long(t.offset),
                            grad.begin() + long(t.offset + size_t(t.rows * t.cols)));
      std::vector<double> b(num.begin() + long(t.offset),
                            num.begin() + long(t.offset + size_t(t.rows * t.cols)));
      INFO(t.name);
      CHECK(rel(a, b) < kTol);
    }
  }
}

TEST_CASE("the training forward pass agrees with the runtime forward pass", "[train][model]") {
  const Model m = load_model(test::stories260k());
  const Layout L = make_layout(m.config);
  const std::vector<float> w = params_from_model<float>(m, L);
  std::vector<int32_t> tokens = {1};
  std::mt19937 rng(4);
  while (tokens.size() < 40) tokens.push_back(3 + int32_t(rng() % 500));
  Workspace<float> ws;
  const double loss = loss_and_grad(L, w.data(), tokens, (float*)nullptr, 1.0, ws);
  RunState st(m.config, int(tokens.size()));
  const auto logits = forward(m, st, tokens);
  double ref = 0;
  for (size_t t = 0; t + 1 < tokens.size(); ++t)
    ref += token_nll(logits.subspan(t * m.config.vocab_size, m.config.vocab_size), tokens[t + 1]);
  ref /= double(tokens.size() - 1);
  CHECK(loss == Approx(ref).epsilon(1e-5));  // float, two implementations
  // model_from_params round-trips into a model the runtime runs identically.
  const Model back = model_from_params(L, w, "copy");
  RunState st2(m.config, int(tokens.size()));
  const auto logits2 = forward(back, st2, tokens);
  CHECK(std::equal(logits.begin(), logits.end(), logits2.begin()));
}

TEST_CASE("training forward equals runtime forward with linear and llama3 RoPE scaling",
          "[train][model]") {
  Model m = load_model(test::stories260k());
  std::vector<int32_t> tokens = {1};
  std::mt19937 rng(5);
  while (tokens.size() < 40) tokens.push_back(3 + int32_t(rng() % 500));
  auto trainer_loss = [&](const Model& mm) {
    const Layout L = make_layout(mm.config);
    const std::vector<float> w = params_from_model<float>(mm, L);
    Workspace<float> ws;
    return loss_and_grad(L, w.data(), tokens, (float*)nullptr, 1.0, ws);
  };
  auto runtime_loss = [&](const Model& mm) {
    RunState st(mm.config, int(tokens.size()));
    const auto logits = forward(mm, st, tokens);
    double ref = 0;
    for (size_t t = 0; t + 1 < tokens.size(); ++t)
      ref +=
          token_nll(logits.subspan(t * mm.config.vocab_size, mm.config.vocab_size), tokens[t + 1]);
    return ref / double(tokens.size() - 1);
  };
  const double plain = trainer_loss(m);
  // Llama 3.1's rule with an original context of 16, so that the 40 positions reach past it.
  RopeScaling llama3;
  llama3.kind = RopeScalingKind::kLlama3;
  llama3.factor = 8, llama3.low_freq_factor = 1, llama3.high_freq_factor = 4;
  llama3.original_max_position = 16;
  RopeScaling linear;
  linear.kind = RopeScalingKind::kLinear;
  linear.factor = 4;
  for (const RopeScaling& rs : {llama3, linear}) {
    INFO(rope_scaling_name(rs.kind));
    m.config.rope_scaling = rs;
    const double loss = trainer_loss(m);
    CHECK(loss == Approx(runtime_loss(m)).epsilon(1e-5));  // float, two implementations
    CHECK(std::abs(loss - plain) > 1e-4);                  // the scaling changed something
  }
  RopeScaling longrope;
  longrope.kind = RopeScalingKind::kLongrope;
  m.config.rope_scaling = longrope;
  CHECK_THROWS_WITH(make_layout(m.config), Catch::Contains("'longrope' is not supported"));
}

TEST_CASE("a reduced model with compressed keys: training forward equals runtime forward",
          "[train][model]") {
  const Model m = load_model(test::stories260k());
  // svd_w on a RoPE model keeps 4 K heads and compresses them after RoPE (k_compress,
  // q_project), which the runtime computes with its own code (forward.cpp).
  const ReducedModel r = reduce_kv_heads(m, 2, ReduceMethod::kSvdW);
  REQUIRE(r.model.config.compressed_keys());
  const Layout L = make_layout(r.model.config);
  const std::vector<float> w = params_from_model<float>(r.model, L);
  std::vector<int32_t> tokens = {1};
  std::mt19937 rng(5);
  while (tokens.size() < 40) tokens.push_back(3 + int32_t(rng() % 500));
  Workspace<float> ws;
  const double loss = loss_and_grad(L, w.data(), tokens, (float*)nullptr, 1.0, ws);
  RunState st(r.model.config, int(tokens.size()));
  const auto logits = forward(r.model, st, tokens);
  double ref = 0;
  for (size_t t = 0; t + 1 < tokens.size(); ++t)
    ref += token_nll(logits.subspan(t * m.config.vocab_size, m.config.vocab_size), tokens[t + 1]);
  ref /= double(tokens.size() - 1);
  CHECK(loss == Approx(ref).epsilon(1e-5));  // float, two implementations
  // Attention-only mask: every Q/K/V/O, k_compress and q_project value, nothing else.
  const std::vector<uint8_t> mask = attention_mask(L);
  size_t want = 0;
  for (const TensorSpec& t : L.tensors)
    if (t.name.find("self_attn") != std::string::npos) want += size_t(t.rows * t.cols);
  CHECK(size_t(std::count(mask.begin(), mask.end(), uint8_t(1))) == want);
  CHECK(mask[L.layers[0].k_compress] == 1);
  CHECK(mask[L.layers[0].w_gate] == 0);
}

TEST_CASE("learning-rate schedule and AdamW update by hand", "[train]") {
  TrainOptions o;
  o.steps = 110, o.warmup = 10, o.lr = 1e-3, o.min_lr = 1e-4;
  CHECK(learning_rate(o, 0) == Approx(1e-4));
  CHECK(learning_rate(o, 9) == Approx(1e-3));
  CHECK(learning_rate(o, 10) == Approx(1e-3));
  CHECK(learning_rate(o, 60) == Approx(5.5e-4));  // half-way down the cosine
  CHECK(learning_rate(o, 110) == Approx(1e-4));
  ModelConfig c;
  c.dim = 2, c.hidden_dim = 2, c.n_layers = 1, c.n_heads = 1, c.n_kv_heads = 1, c.head_dim = 2;
  c.vocab_size = 3, c.max_seq_len = 4, c.tied_embeddings = true;
  const Layout L = make_layout(c);
  std::vector<float> w(L.size, 0.5f), g(L.size, 0.0f);
  g[L.emb] = 0.2f;                   // a matrix element: decays
  g[L.layers[0].attn_norm] = -0.4f;  // a norm gain: no decay
  o.weight_decay = 0.1;
  AdamState st;
  adamw_step(L, o, 1e-2, w, g, st);
  // First step: m_hat = g, v_hat = g^2, so the step is lr * sign(g) (eps aside).
  CHECK(w[L.emb] == Approx(0.5 - 1e-2 * 0.1 * 0.5 - 1e-2).epsilon(1e-6));
  CHECK(w[L.layers[0].attn_norm] == Approx(0.5 + 1e-2).epsilon(1e-6));
  CHECK(w[L.emb + 1] == Approx(0.5 - 1e-2 * 0.1 * 0.5).epsilon(1e-6));  // zero gradient: decay only
  o.trainable.assign(L.size, 0);
  const float frozen = w[L.emb];
  adamw_step(L, o, 1e-2, w, g, st);
  CHECK(w[L.emb] == frozen);
}

TEST_CASE("training from scratch lowers held-out loss, deterministically", "[train][model]") {
  const Model ref = load_model(test::stories260k());
  // Text: the shipped model's own greedy stories are not needed; a real token stream is.
  std::vector<int32_t> stream;
  {
    std::mt19937 rng(1);
    // A Markov-ish stream: repeated phrases the model can learn in a few steps.
    const std::vector<std::vector<int32_t>> phrases = {
        {300, 301, 302, 303}, {310, 311, 312}, {320, 321, 322, 323, 324}, {330, 331}};
    while (stream.size() < 20000) {
      const auto& p = phrases[rng() % phrases.size()];
      stream.insert(stream.end(), p.begin(), p.end());
    }
  }
  ModelConfig c = ref.config;
  c.dim = 32, c.hidden_dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
  c.head_dim = 8, c.max_seq_len = 64, c.rope_layout = RopeLayout::kRotateHalf;
  const Layout L = make_layout(c);
  TrainOptions o;
  o.steps = 200, o.batch = 4, o.seq_len = 48, o.lr = 5e-3, o.warmup = 10, o.seed = 2;
  auto run = [&] {
    std::vector<float> w = init_params(L, 7);
    AdamState st;
    for (int s = 0; s < o.steps; ++s) train_step(L, o, w, st, batch_at(stream, c.bos_id, o, s), s);
    return w;
  };
  const auto held =
      heldout_windows(std::span<const int32_t>(stream).subspan(15000), c.bos_id, 48, 2000);
  const double before = mean_loss(L, init_params(L, 7), held);
  const std::vector<float> w = run();
  const double after = mean_loss(L, w, held);
  CHECK(before > 5.5);  // ~log(512) at init
  CHECK(after < 1.0);   // the phrases are learnt (their entropy: ~0.4 nats per token)
  CHECK(run() == w);    // same seed, same threads: the same weights
}

TEST_CASE("batch_at: repeated passages, and unchanged batches without them", "[train]") {
  std::vector<int32_t> stream(5000);
  for (size_t i = 0; i < stream.size(); ++i) stream[i] = int32_t(3 + i % 997);  // distinct runs
  TrainOptions o;
  o.batch = 50, o.seq_len = 65, o.seed = 9;  // 64 text tokens: passages of 8 to 32
  TrainOptions all = o, half = o;
  all.repeat_share = 1.0, half.repeat_share = 0.5;
  int repeated = 0, total = 0;
  std::set<int> lengths, distances;
  for (int step = 0; step < 8; ++step) {
    const auto plain = batch_at(stream, 1, o, step), rep = batch_at(stream, 1, all, step),
               mix = batch_at(stream, 1, half, step);
    for (size_t b = 0; b < plain.size(); ++b) {
      REQUIRE(rep[b].size() == 65);
      // The same window as without repeats, except one contiguous stretch [p2, p2 + len)
      // that holds an earlier, non-overlapping passage of the window (tokens are distinct
      // within a window, so the stretch and its source are unambiguous).
      std::vector<size_t> diff;
      for (size_t i = 0; i < 65; ++i)
        if (rep[b][i] != plain[b][i]) diff.push_back(i);
      REQUIRE(!diff.empty());
      const size_t p2 = diff.front(), len = diff.back() - p2 + 1;
      CHECK(diff.size() == len);
      CHECK((len >= 8 && len <= 32));
      const auto src = std::find(plain[b].begin(), plain[b].end(), rep[b][p2]);
      REQUIRE(src != plain[b].end());
      const size_t p1 = size_t(src - plain[b].begin());
      CHECK(p1 + len <= p2);
      CHECK(std::equal(rep[b].begin() + long(p2), rep[b].begin() + long(p2 + len),
                       plain[b].begin() + long(p1)));
      lengths.insert(int(len)), distances.insert(int(p2 - p1));
      // In the mix, each sequence is one or the other.
      const bool is_rep = mix[b] == rep[b];
      CHECK((is_rep || mix[b] == plain[b]));
      repeated += is_rep, ++total;
    }
  }
  // Lengths and distances vary (no fixed offset to learn).
  CHECK(lengths.size() > 10);
  CHECK(distances.size() > 10);
  // 400 draws at p = 0.5: the share lies within 0.5 +- 0.1 (5 standard deviations).
  CHECK(std::abs(double(repeated) / total - 0.5) < 0.1);
}

TEST_CASE("batch_at: random-token blocks repeated to fill the window", "[train]") {
  std::vector<int32_t> stream(5000);
  for (size_t i = 0; i < stream.size(); ++i) stream[i] = int32_t(3 + i % 997);
  TrainOptions o;
  o.batch = 50, o.seq_len = 129, o.seed = 4;
  TrainOptions all = o, half = o;
  all.random_blocks = {1.0, 5, 40, 100, 300};
  half.random_blocks = {0.5, 5, 40, 100, 300};
  int blocks = 0, total = 0;
  std::set<int> lengths;
  for (int step = 0; step < 8; ++step) {
    int64_t counted = -1, counted_half = -1;
    const auto plain = batch_at(stream, 1, o, step), rb = batch_at(stream, 1, all, step, &counted),
               mix = batch_at(stream, 1, half, step, &counted_half);
    CHECK(counted == int64_t(o.batch) * 129);
    int in_mix = 0;
    for (size_t b = 0; b < plain.size(); ++b) {
      const auto& s = rb[b];
      REQUIRE(s.size() == 129);
      CHECK(s[0] == 1);
      // The period: the first position where the sequence starts over.
      size_t len = 1;
      while (len < 128 && s[1 + len] != s[1]) ++len;
      CHECK((len >= 5 && len <= 40));
      lengths.insert(int(len));
      std::set<int32_t> ids(s.begin() + 1, s.begin() + 1 + long(len));
      CHECK(ids.size() == len);  // distinct within the block
      CHECK(*ids.begin() >= 100);
      CHECK(*ids.rbegin() < 300);
      for (size_t i = 1 + len; i < 129; ++i) CHECK(s[i] == s[i - len]);
      const bool is_block = mix[b] == rb[b];
      CHECK((is_block || mix[b] == plain[b]));  // the mix is one or the other, per sequence
      in_mix += is_block;
    }
    CHECK(int64_t(in_mix) * 129 == counted_half);
    blocks += in_mix, total += int(plain.size());
  }
  CHECK(lengths.size() > 15);
  CHECK(std::abs(double(blocks) / total - 0.5) < 0.1);  // 400 draws: 5 standard deviations
}

TEST_CASE("batch_at: embedded random blocks are a passkey told twice inside a text window",
          "[train]") {
  // Text ids 3..999 in order (so any position's id says where it came from); block ids
  // 1000..1299, which the text never uses.
  std::vector<int32_t> stream(5000);
  for (size_t i = 0; i < stream.size(); ++i) stream[i] = int32_t(3 + i % 997);
  TrainOptions o;
  o.batch = 40, o.seq_len = 129, o.seed = 9;
  TrainOptions emb = o;
  emb.random_blocks = {1.0, 4, 30, 1000, 1300};
  emb.random_blocks.embedded = 1.0;
  std::set<int64_t> distances;
  for (int step = 0; step < 5; ++step) {
    int64_t counted = 0;
    const auto plain = batch_at(stream, 1, o, step), e = batch_at(stream, 1, emb, step, &counted);
    int64_t block_ids = 0;
    for (size_t b = 0; b < e.size(); ++b) {
      const auto& s = e[b];
      REQUIRE(s.size() == 129);
      CHECK(s[0] == 1);
      // Outside the two copies the window is the plain batch's text, unchanged.
      std::vector<size_t> at;
      for (size_t i = 1; i < s.size(); ++i)
        if (s[i] >= 1000)
          at.push_back(i);
        else
          CHECK(s[i] == plain[b][i]);
      REQUIRE(at.size() % 2 == 0);
      const size_t len = at.size() / 2;
      CHECK((len >= 4 && len <= 30));
      // Two contiguous copies of the same distinct ids, the second after the first.
      const size_t p1 = at[0], p2 = at[len];
      CHECK(at[len - 1] == p1 + len - 1);
      CHECK(at.back() == p2 + len - 1);
      std::set<int32_t> ids;
      for (size_t k = 0; k < len; ++k) {
        CHECK(s[p2 + k] == s[p1 + k]);
        ids.insert(s[p1 + k]);
      }
      CHECK(ids.size() == len);
      distances.insert(int64_t(p2 - p1));
      block_ids += int64_t(at.size());
    }
    CHECK(counted == block_ids);
  }
  CHECK(distances.size() > 40);  // the distance varies
}

TEST_CASE("batch_at: windows without BOS hold seq_len stream tokens; random blocks need BOS",
          "[train]") {
  std::vector<int32_t> stream(400);
  for (size_t i = 0; i < stream.size(); ++i) stream[i] = int32_t(3 + i);
  TrainOptions o;
  o.batch = 16, o.seq_len = 9, o.seed = 4;
  for (const std::vector<int32_t>& s : batch_at(stream, -1, o, 0)) {
    REQUIRE(s.size() == 9);
    for (size_t t = 1; t < s.size(); ++t) CHECK(s[t] == s[t - 1] + 1);  // consecutive ids
  }
  // Held-out windows: 8 targets each, consecutive, no BOS.
  const auto held = heldout_windows(stream, -1, 9, 40);
  REQUIRE(held.size() == 5);
  for (size_t w = 0; w < held.size(); ++w) CHECK(held[w].front() == 3 + int32_t(9 * w));
  o.random_blocks.share = 0.5, o.random_blocks.min_len = 2, o.random_blocks.max_len = 4;
  o.random_blocks.token_lo = 10, o.random_blocks.token_hi = 50;
  CHECK_THROWS_WITH(batch_at(stream, -1, o, 0),
                    Catch::Contains("random_blocks start each block sequence with BOS"));
}
