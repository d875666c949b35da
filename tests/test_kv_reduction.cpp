// KV-head reduction: identity when nothing is merged, exact when merged heads are copies,
// and svd_a never worse than mean_pool or svd_w at reconstructing the calibration
// activations (Eckart-Young), on real models.
#include <catch2/catch.hpp>
#include <cmath>
#include <map>

#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/kv/calibration.hpp"
#include "kvscope/kv/kv_reduction.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/report/table.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;
const char* kModels[] = {"models/stories260K/stories260K.bin", "models/tinystories656K",
                         "models/babyllama105/model5000.bin"};
const ReduceMethod kMethods[] = {ReduceMethod::kMeanPool, ReduceMethod::kSvdW, ReduceMethod::kSvdA,
                                 ReduceMethod::kSvdAFusedPreRope};

std::vector<int32_t> calibration_stream(const Tokenizer& tok) {
  TextSpec ts;
  ts.path = kData + "/text/tinystories/tinystories_train_head.txt";
  ts.max_bytes = 40000;
  return token_stream(tok, load_documents(ts));
}

CalibrationGrams calibrate(const Model& m, const Tokenizer& tok, int64_t tokens) {
  CalibrationOptions o;
  o.tokens = tokens;
  o.seq_len = 128;
  return collect_grams(m, tok.bos_id, calibration_stream(tok), o);
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& toks) {
  RunState st(m.config, int(toks.size()));
  const auto l = forward(m, st, toks);
  return std::vector<float>(l.begin(), l.end());
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<double> bd(b.begin(), b.end());
  return test::rel_error(a.data(), bd.data(), bd.size());
}

std::vector<int32_t> held_out(const Tokenizer& tok, int n) {
  TextSpec ts;
  ts.path = kData + "/text/tinystories/tinystories_valid_head.txt";
  ts.doc_separator = "<|endoftext|>";
  ts.max_docs = 5;
  std::vector<int32_t> s = token_stream(tok, load_documents(ts));
  s.resize(size_t(n));
  return s;
}

}  // namespace

TEST_CASE("reducing to the same number of KV heads reproduces the model, every method",
          "[reduction][model]") {
  for (const char* rel_path : kModels) {
    const Model m = load_model(kData + "/" + rel_path);
    const auto tok = load_tokenizer(find_tokenizer_for(kData + "/" + rel_path));
    CalibrationGrams cal = calibrate(m, *tok, 1024);
    const std::vector<int32_t> toks = held_out(*tok, 100);
    const std::vector<float> want = logits_of(m, toks);
    for (ReduceMethod meth : kMethods) {
      INFO(rel_path << " " << method_name(meth));
      const ReducedModel r = reduce_kv_heads(m, m.config.n_kv_heads, meth, &cal);
      CHECK(r.model.config.n_kv_heads == m.config.n_kv_heads);
      CHECK(rel(logits_of(r.model, toks), want) < 1e-5);
    }
  }
}

TEST_CASE("merging heads that are copies changes nothing, every method", "[reduction][model]") {
  for (const char* rel_path : {kModels[0], kModels[1]}) {  // adjacent pairs, rotate-half
    for (int target : {2, 1}) {
      // Make every KV head of a group a copy of the group's first head (W_K and W_V).
      Model m = load_model(kData + "/" + std::string(rel_path));
      const auto tok = load_tokenizer(find_tokenizer_for(kData + "/" + std::string(rel_path)));
      widen_all(m);
      const int h = m.config.n_kv_heads, t = h / target, hd = m.config.head_dim, D = m.config.dim;
      for (LayerWeights& lw : m.weights.layers)
        for (Tensor* w : {&lw.wk, &lw.wv}) {
          std::vector<float> x = w->to_f32();
          for (int i = 0; i < h; ++i)
            std::copy(x.begin() + size_t(i / t * t) * hd * D,
                      x.begin() + size_t(i / t * t + 1) * hd * D, x.begin() + size_t(i) * hd * D);
          *w = make_tensor(w->name, w->rows, w->cols, x);
        }
      CalibrationGrams cal = calibrate(m, *tok, 2048);
      const std::vector<int32_t> toks = held_out(*tok, 100);
      const std::vector<float> want = logits_of(m, toks);
      for (ReduceMethod meth : kMethods) {
        INFO(rel_path << " -> " << target << " " << method_name(meth));
        const ReducedModel r = reduce_kv_heads(m, target, meth, &cal);
        CHECK(r.model.config.n_kv_heads == target);
        CHECK(rel(logits_of(r.model, toks), want) < 1e-5);
      }
    }
  }
}

TEST_CASE(
    "merging copied heads changes nothing in biased, q/k-normed, Gemma and partial-rotary "
    "models",
    "[reduction][model][families]") {
  // Random-weight models of the newer families, 2 KV heads merged into 1 after making
  // head 1 a copy of head 0 (W_K, W_V and their biases): every method the model allows
  // must reproduce its logits. A bias left behind, or merged differently from its rows,
  // shows here.
  struct Case {
    const char* name;
    ModelConfig c;
    std::vector<ReduceMethod> methods;
  };
  auto base = [](const char* arch) {
    ModelConfig c;
    c.family = *family_from_name(arch);
    c.dim = 32, c.hidden_dim = 48, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.head_dim = 16, c.vocab_size = 53, c.max_seq_len = 64;
    c.rope_layout = RopeLayout::kRotateHalf;
    return c;
  };
  std::vector<Case> cases;
  {
    ModelConfig c = base("qwen2");
    c.qkv_bias = true;
    cases.push_back({"qwen2 (q/k/v biases)", c, {std::begin(kMethods), std::end(kMethods)}});
  }
  {
    ModelConfig c = base("qwen3");
    c.qk_norm = true;
    cases.push_back({"qwen3 (q/k norms)", c, {ReduceMethod::kSvdW, ReduceMethod::kSvdA}});
  }
  {
    ModelConfig c = base("gemma2");
    c.norm_offset = 1.0f, c.embed_scale = std::sqrt(32.0f), c.sandwich_norms = true;
    c.mlp_act = MlpActivation::kGeluTanh, c.attn_scale = 0.25f, c.tied_embeddings = true;
    c.attn_softcap = 5.0f, c.final_softcap = 8.0f, c.sliding_window = 6;
    c.sliding_layers = {1, 0};
    cases.push_back({"gemma2", c, {std::begin(kMethods), std::end(kMethods)}});
  }
  {
    ModelConfig c = base("phi3");
    c.rotary_dim = 12;
    cases.push_back({"phi3 (partial rotary)", c, {std::begin(kMethods), std::end(kMethods)}});
  }
  for (const Case& cs : cases) {
    test::TempDir d("reduce_family");
    SyntheticSpec spec;
    spec.config = cs.c;
    write_synthetic_hf_model(d.path, spec);
    Model m = load_model(d.path);
    widen_all(m);
    const int hd = cs.c.head_dim;
    for (LayerWeights& lw : m.weights.layers)
      for (Tensor* w : {&lw.wk, &lw.wv, &lw.bk, &lw.bv}) {
        if (w->empty()) continue;
        std::vector<float> x = w->to_f32();
        const size_t per_head = size_t(hd) * size_t(w->numel() / (2 * hd));  // rows or entries
        std::copy(x.begin(), x.begin() + per_head, x.begin() + per_head);
        *w = make_tensor(w->name, w->rows, w->cols, x);
      }
    std::vector<int32_t> stream;
    for (int i = 0; i < 4096; ++i) stream.push_back(int32_t(1 + (i * 7919 + i / 13) % 52));
    CalibrationOptions o;
    o.tokens = 1024;
    o.seq_len = 64;
    CalibrationGrams cal = collect_grams(m, 1, stream, o);
    const std::vector<int32_t> toks(stream.begin() + 100, stream.begin() + 160);
    const std::vector<float> want = logits_of(m, toks);
    for (ReduceMethod meth : cs.methods) {
      INFO(cs.name << " " << method_name(meth));
      const ReducedModel r = reduce_kv_heads(m, 1, meth, &cal);
      CHECK(r.model.config.n_kv_heads == 1);
      CHECK(rel(logits_of(r.model, toks), want) < 1e-5);
    }
    if (cs.c.qk_norm)
      CHECK_THROWS_WITH(reduce_kv_heads(m, 1, ReduceMethod::kMeanPool, &cal),
                        Catch::Contains("q_norm/k_norm") && Catch::Contains("svd_a"));
  }
}

TEST_CASE("svd_a reconstructs calibration K and V no worse than mean_pool or svd_w",
          "[reduction][model]") {
  for (const char* rel_path : {kModels[0], kModels[1]}) {
    const Model m = load_model(kData + "/" + std::string(rel_path));
    const auto tok = load_tokenizer(find_tokenizer_for(kData + "/" + std::string(rel_path)));
    CalibrationGrams cal = calibrate(m, *tok, 4096);
    const int hd = m.config.head_dim;
    for (int target : {2, 1}) {
      const int t = m.config.n_kv_heads / target, width = t * hd;
      std::map<ReduceMethod, ReducedModel> red;
      for (ReduceMethod meth : {ReduceMethod::kMeanPool, ReduceMethod::kSvdW, ReduceMethod::kSvdA})
        red.emplace(meth, reduce_kv_heads(m, target, meth, &cal));
      for (int l = 0; l < m.config.n_layers; ++l)
        for (int j = 0; j < target; ++j)
          for (const char* tensor : {"k", "v"}) {
            // Squared error of projecting the group's calibration rows on Psi's row space:
            // ||X - X Psi^T Psi||^2 = tr(G) - tr(Psi G Psi^T) (Psi has orthonormal rows).
            const std::vector<double> g = cal.at(l, tensor).block(j * width, width, false);
            auto err = [&](const std::vector<double>& psi) {
              double tr = 0.0, kept = 0.0;
              for (int a = 0; a < width; ++a) tr += g[size_t(a) * width + a];
              for (int r = 0; r < hd; ++r)
                for (int a = 0; a < width; ++a)
                  for (int b = 0; b < width; ++b)
                    kept += psi[size_t(r) * width + a] * g[size_t(a) * width + b] *
                            psi[size_t(r) * width + b];
              return (tr - kept) / tr;
            };
            auto basis = [&](ReduceMethod meth) {
              const LayerBases& b = red.at(meth).layers[size_t(l)];
              return std::string(tensor) == "k" ? b.keys[size_t(j)] : b.values[size_t(j)];
            };
            const double e_a = err(basis(ReduceMethod::kSvdA));
            INFO(rel_path << " -> " << target << " layer " << l << " group " << j << " " << tensor
                          << ": svd_a " << e_a << ", mean_pool "
                          << err(basis(ReduceMethod::kMeanPool)) << ", svd_w "
                          << err(basis(ReduceMethod::kSvdW)));
            CHECK(e_a <= err(basis(ReduceMethod::kMeanPool)) + 1e-12);
            CHECK(e_a <= err(basis(ReduceMethod::kSvdW)) + 1e-12);
            CHECK(e_a >= -1e-12);
          }
    }
  }
}

TEST_CASE("projecting captured rows equals the Gram-based reconstruction error",
          "[reduction][model]") {
  // project_rows (used for held-out errors) against the trace formula, on real keys.
  const Model m = load_model(test::stories260k());
  const auto tok = load_tokenizer(kData + "/models/stories260K/tok512.bin");
  struct Keep : ForwardObserver {
    std::vector<float> k;  // layer 1 post-RoPE keys [4, T, 8]
    void on_layer(const LayerCapture& c) override {
      if (c.layer == 1) k.assign(c.k, c.k + size_t(c.n_kv_heads) * c.n_tokens * c.head_dim);
    }
  } keep;
  const std::vector<int32_t> toks = held_out(*tok, 128);
  RunState st(m.config, 128);
  ForwardOptions fo;
  fo.observer = &keep;
  forward(m, st, toks, fo);
  GramAccumulator g(32);
  g.add_heads(keep.k.data(), 4, 128, 8);
  const std::vector<double> gram = g.block(0, 16, false);  // group 0: heads 0 and 1
  const std::vector<double> psi = group_basis(gram, 16, 8);
  std::vector<double> x(128 * 16), orig;
  for (int t = 0; t < 128; ++t)
    for (int hh = 0; hh < 2; ++hh)
      for (int i = 0; i < 8; ++i)
        x[size_t(t) * 16 + hh * 8 + i] = keep.k[(size_t(hh) * 128 + t) * 8 + i];
  orig = x;
  project_rows(x, 128, 16, psi, 8);
  double num = 0.0, den = 0.0, tr = 0.0, kept = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (orig[i] - x[i]) * (orig[i] - x[i]);
    den += orig[i] * orig[i];
  }
  for (int a = 0; a < 16; ++a) tr += gram[size_t(a) * 16 + a];
  for (int r = 0; r < 8; ++r)
    for (int a = 0; a < 16; ++a)
      for (int b = 0; b < 16; ++b)
        kept += psi[size_t(r) * 16 + a] * gram[size_t(a) * 16 + b] * psi[size_t(r) * 16 + b];
  CHECK(num / den == Approx((tr - kept) / tr).epsilon(1e-9));
  // Psi has orthonormal rows.
  for (int a = 0; a < 8; ++a)
    for (int b = 0; b < 8; ++b) {
      double d = 0.0;
      for (int c = 0; c < 16; ++c) d += psi[size_t(a) * 16 + c] * psi[size_t(b) * 16 + c];
      CHECK(d == Approx(a == b ? 1.0 : 0.0).margin(1e-12));
    }
}

TEST_CASE("a reduced model caches Psi k_group and reads with Psi^(i) q (layer 0, by hand)",
          "[reduction][model]") {
  // Layer 0 sees the same input in both models, so its captures can be compared with the
  // definition: cached head j = Psi_j [k_{2j}; k_{2j+1}] (post-RoPE) and query head h, which
  // read original KV head i = h / 2, becomes Psi_j^(i - 2j) q_h.
  const Model m = load_model(test::stories260k());
  const auto tok = load_tokenizer(kData + "/models/stories260K/tok512.bin");
  CalibrationGrams cal = calibrate(m, *tok, 2048);
  const ReducedModel r = reduce_kv_heads(m, 2, ReduceMethod::kSvdA, &cal);
  REQUIRE(r.model.config.compressed_keys());
  struct Keep : ForwardObserver {
    std::vector<float> q, k;
    void on_layer(const LayerCapture& c) override {
      if (c.layer != 0) return;
      q.assign(c.q, c.q + size_t(c.n_heads) * c.n_tokens * c.head_dim);
      k.assign(c.k, c.k + size_t(c.n_kv_heads) * c.n_tokens * c.head_dim);
    }
  } orig, red;
  const std::vector<int32_t> toks = held_out(*tok, 64);
  const int T = 64, hd = 8;
  for (auto [model, keep] : {std::pair{&m, &orig}, std::pair{&r.model, &red}}) {
    RunState st(model->config, T);
    ForwardOptions fo;
    fo.observer = keep;
    forward(*model, st, toks, fo);
  }
  const auto& psi = r.layers[0].keys;  // [hd, 2*hd] per group
  std::vector<double> want_k(size_t(2) * T * hd, 0.0), want_q(size_t(8) * T * hd, 0.0);
  for (int j = 0; j < 2; ++j)
    for (int t = 0; t < T; ++t)
      for (int a = 0; a < hd; ++a) {
        double acc = 0.0;
        for (int i = 0; i < 2; ++i)
          for (int b = 0; b < hd; ++b)
            acc += psi[size_t(j)][size_t(a) * 16 + size_t(i) * hd + b] *
                   orig.k[(size_t(2 * j + i) * T + t) * hd + b];
        want_k[(size_t(j) * T + t) * hd + a] = acc;
      }
  for (int h = 0; h < 8; ++h) {
    const int i = h / 2, j = i / 2, within = i - 2 * j;  // 8 query heads share 4 KV heads
    for (int t = 0; t < T; ++t)
      for (int a = 0; a < hd; ++a) {
        double acc = 0.0;
        for (int b = 0; b < hd; ++b)
          acc += psi[size_t(j)][size_t(a) * 16 + size_t(within) * hd + b] *
                 orig.q[(size_t(h) * T + t) * hd + b];
        want_q[(size_t(h) * T + t) * hd + a] = acc;
      }
  }
  CHECK(test::rel_error(red.k.data(), want_k.data(), want_k.size()) < 1e-5);
  CHECK(test::rel_error(red.q.data(), want_q.data(), want_q.size()) < 1e-5);
  // And the cache really is half as wide.
  RunState st(r.model.config, 8);
  CHECK(st.cache.n_kv_heads() == 2);
}

TEST_CASE("kv_head_reduction run: a no-op reduction reproduces the original row",
          "[reduction][cli][model]") {
  // Target = the model's 4 KV heads: every method's perplexity must equal the original's
  // and every reconstruction / attention error vanish (to float rounding).
  test::TempDir tmp("reduction_run");
  const std::string yaml =
      "kind: kv_head_reduction\nmodels:\n  - name: s\n    path: " + kData +
      "/models/stories260K/stories260K.bin\ntexts:\n  - name: valid\n    path: " + kData +
      "/text/tinystories/tinystories_valid_head.txt\n    doc_separator: \"<|endoftext|>\"\n"
      "kv_head_reduction:\n  targets: [4]\n  calibration:\n    path: " +
      kData +
      "/text/tinystories/tinystories_train_head.txt\n  calibration_tokens: [1024]\n"
      "  eval_tokens: 400\n  error_tokens: 512\n  decode_context: 32\n  decode_tokens: 4\n"
      "  probe: {block: 16, repeats: 3, probes: 2}\n";
  test::write_bytes(tmp / "r.yaml", yaml);
  RunOptions o;
  o.results_root = tmp / "results";
  o.verbose = false;
  const auto dir = run_experiment(tmp / "r.yaml", o);
  const CsvData d = read_csv(dir / "reduction.csv");
  REQUIRE(d.rows.size() == 5);  // original + 4 methods
  const double ppl0 = std::stod(d.rows[0][d.column("perplexity")]);
  for (const auto& r : d.rows) {
    INFO(r[d.column("method")]);
    CHECK(std::stod(r[d.column("perplexity")]) == Approx(ppl0).epsilon(1e-5));
    CHECK(std::stod(r[d.column("k_rel_error")]) < 1e-6);
    CHECK(std::stod(r[d.column("v_rel_error")]) < 1e-6);
    CHECK(std::stod(r[d.column("attn_rel_error")]) < 1e-5);
    CHECK(r[d.column("kv_bytes_ratio")] == "1");
  }
  CHECK(read_csv(dir / "layer_errors.csv").rows.size() == 4 * 5);
  CHECK(read_csv(dir / "timing_decode.csv").rows.size() == 4);
  CHECK(std::filesystem::exists(dir / "reduction_s__valid.png"));
  // The probe sees the same circuit in every no-op reduction as in the original (1e-4
  // relative: the SVD methods rotate the heads' bases, which float rounding feels), and
  // its copy loss is the probe's own: copy 1 of a random block costs about log(range).
  const CsvData ind = read_csv(dir / "induction.csv");
  REQUIRE(ind.rows.size() == 5);
  CHECK(ind.rows[0][ind.column("method")] == "original");
  CHECK(std::stod(ind.rows[0][ind.column("copy_nll_first")]) > 0.5 * std::log(512.0 - 3));
  for (const char* col : {"best_induction", "copy_nll_first", "copy_nll_later"})
    for (const auto& r : ind.rows) {
      INFO(r[ind.column("method")] << " " << col);
      CHECK(std::stod(r[ind.column(col)]) ==
            Approx(std::stod(ind.rows[0][ind.column(col)])).epsilon(1e-4));
    }

  // Bad settings fail before any work, naming the key.
  auto fails = [&](const std::string& y) {
    test::write_bytes(tmp / "bad.yaml", y);
    return run_experiment(tmp / "bad.yaml", o);
  };
  std::string bad = yaml;
  bad.replace(bad.find("targets: [4]"), 12, "targets: [3]");
  CHECK_THROWS_WITH(fails(bad), Catch::Contains("target 3 does not divide"));
  bad = yaml;
  bad.replace(bad.find("targets: [4]"), 12, "methods: [svd_x]");
  CHECK_THROWS_WITH(fails(bad), Catch::Contains("unknown method 'svd_x'") &&
                                    Catch::Contains("mean_pool, svd_w, svd_a"));
  bad = yaml.substr(0, yaml.find("  calibration:"));
  CHECK_THROWS_WITH(fails(bad), Catch::Contains("missing required key 'calibration'"));
}
