// Experiment kind quant_drift on the shipped TinyStories-656K checkpoint and GGUF
// conversions of it written by this test (tests/gguf_convert.hpp): an F32 conversion drifts
// by nothing (float rounding), a Q8_0 one by what a second computation here finds (to the CSV's 9
// digits) from the captured K/V and logits of both models; mismatched models are refused by name.
#include <catch2/catch.hpp>
#include <cmath>

#include "capture_observer.hpp"
#include "gguf_convert.hpp"
#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/kv/kv_dump.hpp"
#include "kvscope/report/table.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "test_util.hpp"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

std::string config(const fs::path& tmp, const std::string& extra_model,
                   const std::string& section) {
  const std::string tok = kData + "/models/tinystories656K/tokenizer.json";
  return "kind: quant_drift\nmodels:\n  - name: hf\n    path: " + kData +
         "/models/tinystories656K\n  - name: f32\n    path: " + (tmp / "f32.gguf").string() +
         "\n    tokenizer: " + tok + "\n  - name: q8\n    path: " + (tmp / "q8.gguf").string() +
         "\n    tokenizer: " + tok + "\n" + extra_model +
         "texts:\n  - name: valid\n    path: " + kData +
         "/text/tinystories/tinystories_valid_head.txt\n    doc_separator: "
         "\"<|endoftext|>\"\nquant_drift:\n" +
         section;
}

}  // namespace

TEST_CASE("quant_drift: an F32 GGUF does not drift, a Q8_0 one by what its K/V and logits say",
          "[quant_drift][gguf][experiment]") {
  test::TempDir tmp("quant_drift");
  const Model hf = load_model(kData + "/models/tinystories656K");
  Model twin;
  test::write_gguf(tmp.path / "f32.gguf", hf, false, &twin);
  test::write_gguf(tmp.path / "q8.gguf", hf, true, &twin);
  test::write_bytes(tmp.path / "d.yaml", config(tmp.path, "", "  seq_len: 64\n  n_seq: 2\n"));
  RunOptions o;
  o.results_root = tmp.path / "results";
  o.verbose = false;
  const fs::path dir = run_experiment(tmp.path / "d.yaml", o);
  const CsvData kv = read_csv(dir / "quant_drift_kv.csv");
  const CsvData nll = read_csv(dir / "quant_drift_nll.csv");
  const CsvData layers = read_csv(dir / "quant_drift_layers.csv");
  // 2 models x 2 layers x 4 KV heads x 3 tensors; per layer: 2 x 2 x 3; one NLL row each.
  REQUIRE(kv.rows.size() == 48);
  CHECK(layers.rows.size() == 12);
  REQUIRE(nll.rows.size() == 2);
  auto num = [](const CsvData& d, const std::vector<std::string>& r, const char* c) {
    return std::stod(r[d.column(c)]);
  };
  for (const auto& r : kv.rows) {
    if (r[kv.column("model")] != "f32") continue;
    CHECK(num(kv, r, "rel_l2") < 1e-5);
    CHECK(num(kv, r, "mean_cosine") > 1 - 1e-9);
  }
  const auto& f32 = nll.rows[0];
  CHECK(f32[nll.column("model")] == "f32");
  CHECK(f32[nll.column("weights")] == "F32:" + std::to_string(2 * 9 + 2));
  CHECK(num(nll, f32, "perplexity_ratio") == Approx(1.0).epsilon(1e-5));
  CHECK(num(nll, f32, "mean_kl") < 1e-9);
  CHECK(num(nll, f32, "top1_agreement") == 1.0);

  // The Q8_0 row again from the two models' own captures: the sequences are the first two
  // 64-token pieces of the stream; relative L2 of V, layer 1, KV head 2, and perplexities.
  const LoadedModel a = load_model_and_tokenizer(kData + "/models/tinystories656K");
  const Model q8 = load_model(tmp.path / "q8.gguf");
  TextSpec ts;
  ts.path = kData + "/text/tinystories/tinystories_valid_head.txt";
  ts.doc_separator = "<|endoftext|>";
  const std::vector<int32_t> stream = token_stream(*a.tokenizer, load_documents(ts));
  double d2 = 0, r2 = 0, nll_a = 0, nll_q = 0;
  int scored = 0;
  for (int s = 0; s < 2; ++s) {
    const std::span<const int32_t> toks(stream.data() + 64 * s, 64);
    test::CaptureQKV ca, cq;
    RunState sa(a.model.config, 64), sq(q8.config, 64);
    ForwardOptions oa, oq;
    oa.observer = &ca, oq.observer = &cq;
    const auto la = forward(a.model, sa, toks, oa);
    const std::vector<float> lav(la.begin(), la.end());
    const auto lq = forward(q8, sq, toks, oq);
    const size_t off = size_t(2) * 64 * 16, n = 64 * 16;  // head 2 of [4, 64, 16]
    for (size_t i = 0; i < n; ++i) {
      const double x = cq.v[1][off + i], r = ca.v[1][off + i];
      d2 += (x - r) * (x - r), r2 += r * r;
    }
    for (int t = 0; t < 63; ++t) {
      if (toks[size_t(t) + 1] == a.tokenizer->bos_id) continue;
      auto lnp = [&](const float* z) {  // -log softmax(z)[target], by hand
        double mx = z[0], sum = 0;
        for (int v = 0; v < 2048; ++v) mx = std::max(mx, double(z[v]));
        for (int v = 0; v < 2048; ++v) sum += std::exp(double(z[v]) - mx);
        return mx + std::log(sum) - double(z[toks[size_t(t) + 1]]);
      };
      nll_a += lnp(lav.data() + size_t(t) * 2048);
      nll_q += lnp(lq.data() + size_t(t) * 2048);
      ++scored;
    }
  }
  const auto& q = nll.rows[1];
  CHECK(q[nll.column("model")] == "q8");
  CHECK(num(nll, q, "tokens_scored") == scored);
  CHECK(num(nll, q, "perplexity") == Approx(std::exp(nll_q / scored)).epsilon(1e-7));
  CHECK(num(nll, q, "reference_perplexity") == Approx(std::exp(nll_a / scored)).epsilon(1e-7));
  CHECK(num(nll, q, "mean_kl") > 0);
  bool found = false;
  for (const auto& r : kv.rows)
    if (r[kv.column("model")] == "q8" && r[kv.column("layer")] == "1" &&
        r[kv.column("kv_head")] == "2" && r[kv.column("tensor")] == "v") {
      found = true;
      CHECK(num(kv, r, "rel_l2") == Approx(std::sqrt(d2 / r2)).epsilon(1e-7));
      CHECK(num(kv, r, "rel_l2") > 1e-4);  // Q8_0 moved it...
      CHECK(num(kv, r, "rel_l2") < 5e-2);  // ...by 8-bit rounding's amount
    }
  CHECK(found);

  // Models that cannot be compared, and a reference that is not there, are refused by name.
  auto fails = [&](const std::string& extra, const std::string& section) {
    test::write_bytes(tmp.path / "bad.yaml", config(tmp.path, extra, section));
    return run_experiment(tmp.path / "bad.yaml", o);
  };
  CHECK_THROWS_WITH(fails("", "  reference: nope\n  seq_len: 64\n"),
                    Catch::Contains("quant_drift.reference 'nope' is not one of the models"));
  CHECK_THROWS_WITH(
      fails("  - name: s\n    path: " + kData + "/models/stories260K/stories260K.bin\n",
            "  seq_len: 64\n"),
      Catch::Contains("model 's' has 5 layers but the reference 'hf' has 2"));
  CHECK_THROWS_WITH(
      fails("  - name: t\n    path: " + kData + "/models/tinystories656K\n    tokenizer: " + kData +
                "/models/stories260K/tok512.bin\n",
            "  seq_len: 64\n"),
      Catch::Contains("model 't' and the reference 'hf' tokenize text 'valid' differently"));
}

TEST_CASE(
    "kvscope dump of a Q8_0 GGUF: K/V equal its dequantized twin's, within Q8_0 of the "
    "original's",
    "[gguf][dump][cli]") {
  test::TempDir tmp("gguf_dump");
  const std::string dir = kData + "/models/tinystories656K";
  const Model hf = load_model(dir);
  Model twin;
  test::write_gguf(tmp.path / "q8.gguf", hf, true, &twin);
  const std::string text = kData + "/text/tinystories/tinystories_valid_head.txt";
  const auto r = test::run_kvscope("dump -m " + (tmp.path / "q8.gguf").string() + " --tokenizer " +
                                   dir + "/tokenizer.json --text " + text +
                                   " --doc-separator '<|endoftext|>' --n-seq 2 --seq-len 64 -o " +
                                   (tmp.path / "q8.h5").string());
  REQUIRE(r.exit_code == 0);
  KVDumpReader q8(tmp.path / "q8.h5");
  // The same sequences through the original and through the twin (the dequantized
  // weights in memory), captured here.
  const std::vector<int32_t> toks = q8.tokens(0, 2);
  const ModelConfig& c = hf.config;
  double d_twin = 0, d_orig = 0, n2 = 0;
  std::vector<float> got(size_t(2) * 64 * c.head_dim);
  for (int s = 0; s < 2; ++s) {
    const std::span<const int32_t> seq(toks.data() + 64 * s, 64);
    test::CaptureQKV co, ct;
    RunState so(c, 64), st(c, 64);
    ForwardOptions oo, ot;
    oo.observer = &co, ot.observer = &ct;
    forward(hf, so, seq, oo);
    forward(twin, st, seq, ot);
    for (int l = 0; l < c.n_layers; ++l)
      for (const char* name : {"k_pre_rope", "k", "v"})
        for (int h = 0; h < c.n_kv_heads; ++h) {
          q8.read_head(l, name, h, s, 1, got.data());
          const auto& to = std::string(name) == "v"   ? co.v
                           : std::string(name) == "k" ? co.k
                                                      : co.kpre;
          const auto& tt = std::string(name) == "v"   ? ct.v
                           : std::string(name) == "k" ? ct.k
                                                      : ct.kpre;
          for (int i = 0; i < 64 * c.head_dim; ++i) {
            const size_t at = size_t(h) * 64 * c.head_dim + size_t(i);
            d_twin += std::pow(double(got[size_t(i)]) - tt[size_t(l)][at], 2);
            d_orig += std::pow(double(got[size_t(i)]) - to[size_t(l)][at], 2);
            n2 += std::pow(double(to[size_t(l)][at]), 2);
          }
        }
  }
  CHECK(std::sqrt(d_twin / n2) < 1e-5);  // the dequantized weights, exactly
  CHECK(std::sqrt(d_orig / n2) > 1e-4);  // quantization moved the cache...
  CHECK(std::sqrt(d_orig / n2) < 3e-2);  // ...by Q8_0's amount
}
