// The retrieval_heads and kv_cache_policies experiments end to end on stories260K with
// tiny settings: tables consistent with each other and with hand-computed budgets, razor
// with every head protected equal to full on every task, bad settings rejected.
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/kv/policy_eval.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/report/table.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

fs::path run(const fs::path& dir, const std::string& name, const std::string& yaml) {
  return test::run_config(dir, name, yaml);
}

const std::string kModel =
    "models:\n  - name: stories260K\n    path: " + kData + "/models/stories260K/stories260K.bin\n";
const std::string kFiller = "  filler:\n    path: " + kData +
                            "/text/tinystories/tinystories_valid_head.txt\n"
                            "    doc_separator: \"<|endoftext|>\"\n";
const std::string kTexts = "texts:\n  - name: austen\n    path: " + kData +
                           "/text/janeausten/persuasion.txt\n    max_bytes: 60000\n";
const std::string kTiny =
    "  probe: {probes: 1}\n"
    "  copy: {context: 64, segment: 8, depths: [0.5], trials: 2}\n"
    "  recall: {lengths: [48, 80], depths: [0, 1], trials: 1}\n"
    "  perplexity: {window: 96, windows: 2}\n";

std::string cell(const CsvData& d, size_t row, const char* col) {
  return d.rows[row][d.column(col)];
}

}  // namespace

TEST_CASE("retrieval_heads: per-KV-head scores are the max of their query heads; selection",
          "[retrieval][experiment]") {
  test::TempDir tmp("retrieval_exp");
  const fs::path out =
      run(tmp.path, "rh",
          "kind: retrieval_heads\n" + kModel + "retrieval_heads:\n  block: 40\n  probes: 2\n");
  const CsvData scores = read_csv(out / "scores.csv"), heads = read_csv(out / "heads.csv");
  REQUIRE(scores.rows.size() == 5 * 8);
  REQUIRE(heads.rows.size() == 5 * 4);
  std::map<std::string, double> max_ind;  // "layer/kv_head" -> max over query heads
  for (size_t i = 0; i < scores.rows.size(); ++i) {
    const std::string k = cell(scores, i, "layer") + "/" + cell(scores, i, "kv_head");
    max_ind[k] = std::max(max_ind[k], std::stod(cell(scores, i, "induction")));
  }
  int picked = 0, rank1 = 0;
  for (size_t i = 0; i < heads.rows.size(); ++i) {
    const std::string k = cell(heads, i, "layer") + "/" + cell(heads, i, "kv_head");
    CHECK(std::stod(cell(heads, i, "induction")) == Approx(max_ind[k]).epsilon(1e-8));
    const std::string by = cell(heads, i, "selected_by");
    picked += !by.empty();
    // A retrieval head is one the rule picked that stands out of the noise.
    CHECK(cell(heads, i, "retrieval") ==
          (!by.empty() && cell(heads, i, "above_uniform") == "1" ? "1" : "0"));
    if (cell(heads, i, "induction_rank") == "1") {
      ++rank1;
      CHECK((by == "induction" || by == "both"));
    }
  }
  CHECK(rank1 == 1);
  // ceil(14% of 20) = 3 by induction, plus ceil(1% of 20) = 1 by echo, maybe the same head.
  CHECK((picked == 3 || picked == 4));
  CHECK(fs::file_size(out / "heads_stories260K.png") > 1000);
}

TEST_CASE("retrieval_heads: standard errors from the probes run one at a time; evidence",
          "[retrieval][experiment]") {
  test::TempDir tmp("retrieval_se");
  const std::string probe = "retrieval_heads:\n  block: 40\n  probes: ";
  const fs::path two =
      run(tmp.path, "two", "kind: retrieval_heads\nseed: 5\n" + kModel + probe + "2\n");
  // Probe i of a run uses seed + i: the same two probes, scored alone.
  const fs::path p0 =
      run(tmp.path, "p0", "kind: retrieval_heads\nseed: 5\n" + kModel + probe + "1\n");
  const fs::path p1 =
      run(tmp.path, "p1", "kind: retrieval_heads\nseed: 6\n" + kModel + probe + "1\n");
  const CsvData s2 = read_csv(two / "scores.csv"), s0 = read_csv(p0 / "scores.csv"),
                s1 = read_csv(p1 / "scores.csv");
  const CsvData heads = read_csv(two / "heads.csv"), summary = read_csv(two / "summary.csv");
  REQUIRE(s2.rows.size() == s0.rows.size());
  // Per KV head: the query head giving the max, and its SE over two probes |x0 - x1| / 2
  // (sd with n - 1 = 1, divided by sqrt(2)).
  std::map<std::string, std::pair<double, double>> best;  // layer/kv_head -> (score, se)
  for (size_t i = 0; i < s2.rows.size(); ++i) {
    const std::string k = cell(s2, i, "layer") + "/" + cell(s2, i, "kv_head");
    const double x0 = std::stod(cell(s0, i, "induction")), x1 = std::stod(cell(s1, i, "induction"));
    const double mean = std::stod(cell(s2, i, "induction"));
    CHECK(mean == Approx((x0 + x1) / 2).epsilon(1e-6));  // equal query counts per probe
    if (!best.count(k) || mean > best[k].first) best[k] = {mean, std::abs(x0 - x1) / 2};
  }
  const double uniform = std::stod(cell(summary, 0, "uniform_score"));
  int above = 0;
  for (size_t i = 0; i < heads.rows.size(); ++i) {
    const std::string k = cell(heads, i, "layer") + "/" + cell(heads, i, "kv_head");
    const double se = std::stod(cell(heads, i, "induction_se"));
    CHECK(se == Approx(best[k].second).epsilon(1e-5).margin(1e-12));
    const bool up =
        std::stod(cell(heads, i, "induction")) - uniform > 3 * se ||
        std::stod(cell(heads, i, "echo")) - uniform > 3 * std::stod(cell(heads, i, "echo_se"));
    CHECK(cell(heads, i, "above_uniform") == (up ? "1" : "0"));
    above += up;
  }
  CHECK(std::stoi(cell(summary, 0, "heads_above_uniform")) == above);
  const auto manifest = nlohmann::json::parse(test::slurp(two / "manifest.json"));
  const bool warned =
      manifest["extra"].contains("warnings") &&
      manifest["extra"]["warnings"].dump().find("no retrieval heads found") != std::string::npos;
  int marked = 0;
  for (size_t i = 0; i < heads.rows.size(); ++i) marked += cell(heads, i, "retrieval") == "1";
  CHECK(std::stoi(cell(summary, 0, "retrieval_heads")) == marked);
  CHECK(warned == (marked == 0));
  // tinystories656K's layer-0 echo heads stand ~4x above uniform (20+ SE): the rule's echo
  // pick is marked, and there is no warning.
  const fs::path ts = run(tmp.path, "ts",
                          "kind: retrieval_heads\nmodels:\n  - name: ts\n    path: " + kData +
                              "/models/tinystories656K\n" + probe + "4\n");
  const CsvData th = read_csv(ts / "heads.csv");
  int ts_marked = 0;
  for (size_t i = 0; i < th.rows.size(); ++i) {
    ts_marked += cell(th, i, "retrieval") == "1";
    if (cell(th, i, "echo_rank") == "1") CHECK(cell(th, i, "retrieval") == "1");
  }
  CHECK(ts_marked >= 1);
  CHECK(test::slurp(ts / "manifest.json").find("warnings") == std::string::npos);
  // One probe: no SE (nan), nothing above uniform, and a warning that there is no noise estimate.
  const CsvData h0 = read_csv(p0 / "heads.csv");
  CHECK(cell(h0, 0, "induction_se") == "nan");
  CHECK(cell(h0, 0, "above_uniform") == "0");
  CHECK_THAT(test::slurp(p0 / "manifest.json"), Contains("no noise estimate"));
}

TEST_CASE("kv_cache_policies: razor protecting every head is full; budgets by hand",
          "[policy][experiment]") {
  test::TempDir tmp("policies_exp");
  const fs::path all = run(tmp.path, "all",
                           "kind: kv_cache_policies\n" + kModel + kTexts +
                               "kv_cache_policies:\n  policies: [full, razor]\n"
                               "  induction_shares: [1.0]\n" +
                               kFiller + kTiny);
  for (const char* t : {"copy.csv", "recall.csv", "perplexity.csv"}) {
    const CsvData d = read_csv(all / t);
    REQUIRE(d.rows.size() % 2 == 0);
    for (size_t i = 0; i < d.rows.size(); i += 2) {  // full, razor alternate
      REQUIRE(cell(d, i, "policy") == "full");
      for (const char* col : {"accuracy", "perplexity", "kv_share"})
        if (std::find(d.header.begin(), d.header.end(), col) != d.header.end())
          CHECK(cell(d, i, col) == cell(d, i + 1, col));
    }
  }
  const fs::path some =
      run(tmp.path, "some",
          "kind: kv_cache_policies\n" + kModel + kTexts +
              "kv_cache_policies:\n  s0: 16\n  c: 4\n  n_sink: 2\n" + kFiller + kTiny);
  const CsvData m = read_csv(some / "policies.csv");
  REQUIRE(m.rows.size() == 7);
  for (size_t i = 0; i < m.rows.size(); ++i) {
    // At the model's context N = 512, a compressed razor head keeps 2 sinks + max(16, 128)
    // recent + 1 compensation = 131 slots (130 without it); protected heads keep 512.
    const int P = std::stoi(cell(m, i, "protected_heads"));
    const std::string pol = cell(m, i, "policy");
    double expect = 1.0;
    if (pol.rfind("razor", 0) == 0)
      expect = (P * 512.0 + (20 - P) * (pol == "razor_no_comp" ? 130.0 : 131.0)) / (20 * 512.0);
    if (pol == "streaming" || pol == "h2o") {
      const int Pr = std::stoi(cell(m, 2, "protected_heads"));  // razor's
      expect = std::round((Pr * 512.0 + (20 - Pr) * 131.0) / 20) / 512.0;
    }
    INFO(pol);
    CHECK(std::stod(cell(m, i, "kv_share")) == Approx(expect).epsilon(1e-6));
    // 20 KV heads x 512 slots x (K + V) x head_dim 8 x 4 bytes.
    CHECK(cell(m, i, "full_kv_bytes") == "655360");
    CHECK(std::stod(cell(m, i, "kv_bytes")) == Approx(expect * 655360).epsilon(1e-6));
  }
  CHECK(cell(m, 2, "policy") == "razor");
  CHECK(fs::file_size(some / "recall_stories260K.png") > 1000);
}

TEST_CASE("kv_cache_policies rejects bad settings before running", "[policy][experiment]") {
  test::TempDir tmp("policies_bad");
  auto fails = [&](const std::string& section, const std::string& msg) {
    CHECK_THROWS_WITH(run(tmp.path, "bad",
                          "kind: kv_cache_policies\n" + kModel + "kv_cache_policies:\n" + section),
                      Contains(msg));
    CHECK_FALSE(fs::exists(tmp.path / "results" / "bad"));
  };
  fails("  policies: [full, snapkv]\n", "'snapkv' is not one of");
  fails("  induction_shares: [1.5]\n", "induction_shares");
  fails("  recall: {needle: no placeholder}\n", "recall.needle");
  fails("  perplexity: {prefill: 1}\n", "prefill");
  fails("  copy: {depth: [0.5]}\n", "unknown key 'depth'");
  fails("  tasks: [recall]\n", "filler");
  fails("  tasks: [passkey]\n", "needed by the copy, recall, passkey and multikey tasks");
  fails("  policies: [full, ablate_all]\n",
        "'ablate_all' is not one of full, streaming, razor, razor_no_comp, razor_no_echo, "
        "razor_random, h2o, ablate_retrieval, ablate_random");
  fails("  passkey: {depths: [0.5, 1.5]}\n",
        "key 'kv_cache_policies.passkey.depths': depth 1.5 is not in [0, 1]");
  fails("  passkey: {key: 1}\n", "key 'kv_cache_policies.passkey.key' must be >= 2, got 1");
  fails("  multikey: {keys: [1, 2]}\n", "kv_cache_policies.multikey.keys: 1 is not in [2, 64]");
  fails("  multikey: {distractors: 2}\n", "unknown key 'distractors'");
  fails("  random_draws: 0\n", "random_draws");
  fails("  probe_seeds: 0\n", "probe_seeds");
  // At run time, on the filler: 11 ids, most of them used by the filler, cannot hold a
  // 16-id passkey; a context of 20 tokens cannot hold two; neither leaves a finished run.
  const std::string task = "  tasks: [passkey]\n  probe: {probes: 1}\n" + kFiller;
  fails(task + "  passkey: {lengths: [64], key: 16, token_lo: 259, token_hi: 270}\n",
        "ids of [259, 270) are absent from a 32-token filler passage, a passkey needs 16");
  fails(task + "  passkey: {lengths: [20], key: 16}\n",
        "no passkey length fits model stories260K (context 512)");
  // Windows the model cannot hold, by key, before the probe runs.
  fails("  tasks: [perplexity]\n  perplexity: {window: 600}\n" + kTexts,
        "kv_cache_policies.perplexity.window is 600, but model stories260K takes 4 to 512");
  fails("  tasks: [copy]\n  copy: {context: 513}\n" + kFiller,
        "kv_cache_policies.copy.context is 513, but model stories260K takes at most 512");
}

TEST_CASE("retrieval_heads testbed: counts from heads.csv, a twin's ratio, bad twins refused",
          "[retrieval][experiment][testbed]") {
  test::TempDir tmp("testbed_exp");
  const std::string models =
      "models:\n  - name: a\n    path: " + kData +
      "/models/stories260K/stories260K.bin\n  - name: b\n    path: " + kData +
      "/models/stories260K/stories260K.bin\n";
  const std::string tb =
      "retrieval_heads:\n  block: 40\n  probes: 2\n  testbed:\n    text: {path: " + kData +
      "/text/janeausten/persuasion.txt, max_bytes: 40000}\n"
      "    induction_x: 1.5\n    passage: {context: 128, length: 16, trials: 2}\n"
      "    perplexity_tokens: 2000\n";
  const fs::path out = run(
      tmp.path, "tb", "kind: retrieval_heads\n" + models + tb + "    twin: {model: b, of: [a]}\n");
  const CsvData t = read_csv(out / "testbed.csv"), heads = read_csv(out / "heads.csv"),
                sum = read_csv(out / "summary.csv");
  REQUIRE(t.rows.size() == 2);
  const double uniform = std::stod(cell(sum, 0, "uniform_score"));
  int ind = 0, any = 0;
  std::set<std::string> layers;
  for (size_t i = 0; i < heads.rows.size(); ++i) {
    if (cell(heads, i, "model") != "a") continue;
    const bool x = std::stod(cell(heads, i, "induction")) >= 1.5 * uniform;
    ind += x, any += x || std::stod(cell(heads, i, "echo")) >= 1.5 * uniform;
    if (x) layers.insert(cell(heads, i, "layer"));
  }
  CHECK(std::stoi(cell(t, 0, "induction_heads")) == ind);
  CHECK(std::stoi(cell(t, 0, "retrieval_heads")) == any);
  CHECK(std::stoi(cell(t, 0, "n_induction_layers")) == int(layers.size()));
  // The same weights twice: the ratio is exactly 1; b has no twin.
  CHECK(cell(t, 0, "twin") == "b");
  CHECK(std::stod(cell(t, 0, "perplexity_ratio")) == 1.0);
  CHECK(cell(t, 1, "twin").empty());
  // gap = T - a - n with T = L - 1 - n and a = round(0.25 (T - n)): 111 - 24 - 16 = 71.
  CHECK(cell(t, 0, "passage_gap") == "71");
  CHECK_THROWS_WITH(
      run(tmp.path, "tb2",
          "kind: retrieval_heads\n" + models + tb + "    twin: {model: c, of: [a]}\n"),
      Contains("testbed.twin.model 'c' is not a model of models: (a, b)"));
  CHECK_THROWS_WITH(
      run(tmp.path, "tb3",
          "kind: retrieval_heads\n" + models + tb + "    twin: {model: b, of: [z]}\n"),
      Contains("testbed.twin.of names 'z'"));
  CHECK_FALSE(fs::exists(tmp.path / "results" / "tb2"));
  const std::string head = "kind: retrieval_heads\n" + models +
                           "retrieval_heads:\n  testbed:\n    text: {path: " + kData +
                           "/text/janeausten/persuasion.txt}\n";
  CHECK_THROWS_WITH(run(tmp.path, "tb4", head + "    induction_x: 1\n"),
                    Contains("testbed.induction_x must be > 1, got 1"));
  CHECK_THROWS_WITH(run(tmp.path, "tb5", head + "    passage: {depth: 1.5}\n"),
                    Contains("testbed.passage.depth must lie in [0, 1], got 1.5"));
  CHECK_FALSE(fs::exists(tmp.path / "results" / "tb5"));
}

TEST_CASE(
    "kv_cache_policies controls: pooled probe seeds, named draws, pairs that agree with "
    "the means",
    "[policy][experiment]") {
  test::TempDir tmp("policies_controls");
  const fs::path out =
      run(tmp.path, "ctl",
          "kind: kv_cache_policies\n" + kModel + kTexts +
              "kv_cache_policies:\n  policies: [full, streaming, razor, razor_random, "
              "ablate_retrieval, ablate_random]\n  probe: {probes: 2, block: 40}\n"
              "  probe_seeds: 2\n  random_draws: 3\n  tasks: [passkey, multikey, perplexity]\n" +
              kFiller +
              "  passkey: {lengths: [96, 160], depths: [0, 1], key: 6, trials: 2}\n"
              "  multikey: {keys: [2, 3], lengths: [160], depths: [0.5], key: 4, trials: 2}\n"
              "  perplexity: {window: 96, windows: 2}\n");
  const CsvData pol = read_csv(out / "policies.csv"), pr = read_csv(out / "paired.csv");
  // 1 full + streaming + razor + 3 razor_random + ablate_retrieval + 3 ablate_random.
  std::vector<std::string> names;
  for (size_t i = 0; i < pol.rows.size(); ++i) names.push_back(cell(pol, i, "policy"));
  CHECK(names == std::vector<std::string>{"full", "streaming", "razor", "razor_random#1",
                                          "razor_random#2", "razor_random#3", "ablate_retrieval",
                                          "ablate_random#1", "ablate_random#2", "ablate_random#3"});
  // Each passkey cell has the same trials and each passkey key - 1 predictions, so the mean
  // of the items is the mean of the cells: paired.csv's means must equal policies.csv's.
  auto mean_of = [&](const std::string& policy, const char* col) {
    for (size_t i = 0; i < pol.rows.size(); ++i)
      if (cell(pol, i, "policy") == policy) return std::stod(cell(pol, i, col));
    return double(NAN);
  };
  int checked = 0;
  for (size_t i = 0; i < pr.rows.size(); ++i) {
    if (cell(pr, i, "reference") != "full") continue;
    const std::string task = cell(pr, i, "task"), p = cell(pr, i, "policy");
    const double ref = std::stod(cell(pr, i, "reference_mean"));
    const double val = std::stod(cell(pr, i, "policy_mean"));
    // The CSVs carry 9 significant digits: tolerances 1e-7.
    CHECK(std::stod(cell(pr, i, "difference")) == Approx(val - ref).margin(1e-7));
    if (task == "passkey") {
      CHECK(std::stod(cell(pr, i, "items")) == 2 * 2 * 2);
      CHECK(ref == Approx(mean_of("full", "passkey_accuracy")).margin(1e-7));
      CHECK(val == Approx(mean_of(p, "passkey_accuracy")).margin(1e-7));
      ++checked;
    }
    if (task == "multikey") {  // 2 key counts x 1 cell x 2 trials
      CHECK(std::stod(cell(pr, i, "items")) == 4);
      CHECK(val == Approx(mean_of(p, "multikey_accuracy")).margin(1e-7));
    }
  }
  CHECK(checked == 9);
  // Probe seeds: seed k is blocks 2k, 2k + 1 of the pooled probe of 4, so every query
  // head's pooled score is the mean of the two seeds' (equal query counts per block), and a
  // KV head's (the max over its query heads) is at most the mean of the seeds' maxima and
  // at least half the larger of them.
  const CsvData probes = read_csv(out / "probes.csv");
  std::map<std::string, std::map<std::string, double>> ind;  // seed -> layer.head -> score
  for (size_t i = 0; i < probes.rows.size(); ++i)
    ind[cell(probes, i, "probe_seed")]
       [cell(probes, i, "layer") + "." + cell(probes, i, "kv_head")] =
           std::stod(cell(probes, i, "induction"));
  REQUIRE(ind.size() == 3);
  for (const auto& [h, v] : ind["-1"]) {
    CHECK(v <= (ind["0"][h] + ind["1"][h]) / 2 * (1 + 1e-7));
    CHECK(v >= std::max(ind["0"][h], ind["1"][h]) / 2 * (1 - 1e-7));
  }
  const CsvData sel = read_csv(out / "selections.csv");
  REQUIRE(sel.rows.size() == 3);  // pooled + 2 seeds at the one share
  CHECK(cell(sel, 0, "same_as_pooled") == "1");
  // Draws of razor_random differ from each other (3 heads of 20, 3 draws).
  const CsvData prot = read_csv(out / "protected.csv");
  std::map<std::string, std::string> heads;
  for (size_t i = 0; i < prot.rows.size(); ++i)
    heads[cell(prot, i, "policy")] += cell(prot, i, "layer") + "." + cell(prot, i, "kv_head") + " ";
  CHECK((heads["razor_random#1"] != heads["razor_random#2"] ||
         heads["razor_random#2"] != heads["razor_random#3"]));
  // ablate_random never ablates a head razor protects: it keeps every razor head whole.
  for (int k = 1; k <= 3; ++k) {
    const std::string kept = heads["ablate_random#" + std::to_string(k)];
    std::istringstream razor(heads["razor"]);
    for (std::string h; razor >> h;) CHECK(kept.find(h + " ") != std::string::npos);
  }
}

TEST_CASE("cache policies refuse ALiBi models", "[policy]") {
  test::TempDir tmp("policies_alibi");
  SyntheticSpec s;
  s.config.dim = 32, s.config.hidden_dim = 64, s.config.n_layers = 1, s.config.n_heads = 4;
  s.config.n_kv_heads = 2, s.config.head_dim = 8, s.config.vocab_size = 64;
  s.config.max_seq_len = 64, s.config.positional = PositionalKind::kAlibi;
  write_synthetic_hf_model(tmp.path, s);
  const Model m = load_model(tmp.path);
  const std::vector<int32_t> t = {1, 5, 6, 7};
  TaskVariants tv;
  tv.count = 1;
  CHECK_THROWS_WITH(for_each_variant(m, t, 1, {Variant{}}, tv, [](size_t, CompressedRun&) {}),
                    Contains("ALiBi"));
}
