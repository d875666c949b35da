// kv_frontier end to end on stories260K with tiny settings: properties that could fail
// (the full cache against itself, a method that evicts nothing equal to the full cache, the
// bytes share worked out by hand, razor out of reach and razor with every head whole), and
// bad settings refused by name.
#include <catch2/catch.hpp>
#include <cmath>
#include <map>

#include "kvscope/report/table.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

const std::string kHead =
    "kind: kv_frontier\nseed: 3\nmodels:\n  - name: stories260K\n    path: " + kData +
    "/models/stories260K/stories260K.bin\ntexts:\n  - name: valid\n    path: " + kData +
    "/text/tinystories/tinystories_valid_head.txt\n    doc_separator: \"<|endoftext|>\"\n"
    "kv_frontier:\n  filler:\n    path: " +
    kData +
    "/text/tinystories/tinystories_valid_head.txt\n    doc_separator: \"<|endoftext|>\"\n"
    "  continuation: {window: 96, windows: 3}\n"
    "  passkey: {lengths: [64], depths: [0.5], key: 4, trials: 3}\n"
    "  multikey: {lengths: [96], depths: [0, 1], key: 4, distractors: 2, trials: 2}\n"
    "  recall: {lengths: [48], depths: [0], trials: 1}\n";

// (method, budget, task, measure) -> row
using Key = std::tuple<std::string, std::string, std::string, std::string>;
std::map<Key, std::map<std::string, double>> rows(const fs::path& csv) {
  const CsvData d = read_csv(csv);
  std::map<Key, std::map<std::string, double>> out;
  for (const auto& r : d.rows) {
    auto& m = out[{r[d.column("method")], r[d.column("budget")], r[d.column("task")],
                   r[d.column("measure")]}];
    for (const char* c : {"value", "se", "delta", "delta_se", "kv_share", "items"})
      m[c] = std::stod(r[d.column(c)]);
  }
  return out;
}

}  // namespace

TEST_CASE("kv_frontier: the full cache against itself and a method that evicts nothing",
          "[frontier][experiment]") {
  test::TempDir tmp("frontier_props");
  const fs::path out = test::run_config(
      tmp.path, "fr",
      kHead +
          "  methods: [streaming, snapkv, razor]\n  budgets: [1, 0.25]\n"
          "  during_decoding: false\n  tasks: [continuation, passkey, multikey, recall]\n"
          "  method_keys:\n    snapkv: {window: 8}\n"
          "    razor: {induction_share: 1, echo_share: 0, probe: {probes: 1}}\n");
  auto r = rows(out / "frontier.csv");
  const Key kl{"full", "1", "continuation:valid", "kl"};
  REQUIRE(r.count(kl));
  CHECK(r[kl]["value"] == 0.0);
  CHECK(r[{"full", "1", "continuation:valid", "top1"}]["value"] == 1.0);
  CHECK(r[kl]["items"] == 3);
  CHECK(r[kl]["kv_share"] == 1.0);
  // A share of 1 compressed once keeps the whole prefill: the same numbers as the full
  // cache on every task (same items, paired difference exactly 0).
  for (const auto& [task, measure] :
       std::vector<std::pair<std::string, std::string>>{{"continuation:valid", "perplexity"},
                                                        {"continuation:valid", "kl"},
                                                        {"passkey", "accuracy"},
                                                        {"multikey", "accuracy"},
                                                        {"recall", "accuracy"}}) {
    INFO(task << " " << measure);
    const auto& full = r[{"full", "1", task, measure}];
    for (const char* m : {"streaming", "snapkv"}) {
      CHECK(r[{m, "1", task, measure}]["value"] == full.at("value"));
      CHECK(r[{m, "1", task, measure}]["delta"] == 0.0);
    }
    // razor with every head a retrieval head keeps everything at any budget.
    CHECK(r[{"razor", "0.25", task, measure}]["value"] == full.at("value"));
  }
  // The multi-key grid: 2 depths x 2 passkeys.
  CHECK(r[{"full", "1", "multikey", "accuracy"}]["items"] == 4);
  CHECK(fs::file_size(out / "frontier_stories260K.png") > 1000);
}

TEST_CASE("kv_frontier: bytes held by hand while evicting during decoding; razor out of reach",
          "[frontier][experiment]") {
  test::TempDir tmp("frontier_bytes");
  const fs::path out = test::run_config(
      tmp.path, "fr",
      kHead +
          "  methods: [streaming, h2o, razor]\n  budgets: [0.25]\n  tasks: [continuation]\n"
          "  method_keys:\n    razor: {induction_share: 0.5, echo_share: 0, probe: {probes: "
          "1}}\n");
  auto r = rows(out / "frontier.csv");
  // Window 96: prefill round(0.75 * 96) = 72, 23 tokens decoded. Budget round(0.25 * 72) =
  // 18 slots per head; while a decoded token attends, each head holds 19. The full cache
  // peaks at 95 tokens. streaming holds K and V only: 19 / 95.
  CHECK(r[{"streaming", "0.25", "continuation:valid", "kl"}]["kv_share"] ==
        Approx(19.0 / 95.0).epsilon(1e-9));
  // h2o also holds a float32 score per slot, beside K and V: 2 x 8 (stories260K's
  // head_dim) 16-bit elements = 32 bytes per slot.
  const double kv = 2.0 * 8.0 * 2.0;
  CHECK(r[{"h2o", "0.25", "continuation:valid", "kl"}]["kv_share"] ==
        Approx(19.0 * (kv + 4.0) / (95.0 * kv)).epsilon(1e-9));
  // Half of the heads whole hold 1/2 of the cache: a quarter is out of reach (NaN).
  CHECK(std::isnan(r[{"razor", "0.25", "continuation:valid", "kl"}]["value"]));
  CHECK(r[{"streaming", "0.25", "continuation:valid", "kl"}]["value"] > 0.0);
}

TEST_CASE("kv_frontier rejects bad settings before running", "[frontier][experiment]") {
  test::TempDir tmp("frontier_bad");
  auto bad = [&](const std::string& yaml) {
    return test::run_config(tmp.path, "bad", kHead + yaml);
  };
  CHECK_THROWS_WITH(bad("  methods: [snapkv, snap]\n"),
                    Contains("'snap' is not a method") && Contains("kv_frontier.methods"));
  // Labels, compositions and codec keys (issue 34).
  CHECK_THROWS_WITH(bad("  methods: [kivi+q8_0]\n"),
                    Contains("one eviction method and one codec") && Contains("kivi+q8_0"));
  CHECK_THROWS_WITH(bad("  methods: [snapkv+]\n"), Contains("empty part"));
  CHECK_THROWS_WITH(bad("  methods: [k4]\n  method_keys:\n    k4: {method: kiwi}\n"),
                    Contains("'kiwi' is not a method"));
  CHECK_THROWS_WITH(bad("  methods: [kivi]\n  method_keys:\n    kivi: {bits: 9}\n"),
                    Contains("kivi.bits") && Contains("1..8"));
  CHECK_THROWS_WITH(bad("  methods: [kivi]\n  method_keys:\n    kivi: {residual: 20}\n"),
                    Contains("multiple of the group"));
  CHECK_THROWS_WITH(bad("  methods: [q8_0]\n  method_keys:\n    q8_0: {k_type: q2}\n"),
                    Contains("k_type"));
  CHECK_THROWS_WITH(bad("  methods: [lowrank]\n"), Contains("kv_frontier.calibration"));
  CHECK_THROWS_WITH(bad("  methods: [merged_svd_a]\n"), Contains("kv_frontier.calibration"));
  CHECK_THROWS_WITH(bad("  methods: [snapkv+lowrank]\n  calibration: {path: " + kData +
                        "/text/tinystories/tinystories_valid_head.txt}\n"),
                    Contains("heads: 1"));
  CHECK_THROWS_WITH(bad("  methods: [kivi]\n  method_keys:\n    kivi: {outliers: 1.5}\n"),
                    Contains("outliers"));
  CHECK_THROWS_WITH(bad("  methods: [snapkv]\n  method_keys:\n    snapkv: {windw: 8}\n"),
                    Contains("windw"));
  CHECK_THROWS_WITH(bad("  methods: [snapkv]\n  method_keys:\n    h2o: {sinks: 8}\n"),
                    Contains("h2o"));
  CHECK_THROWS_WITH(bad("  methods: [snapkv, snapkv]\n"), Contains("twice"));
  CHECK_THROWS_WITH(bad("  budgets: [0.5, 0]\n"), Contains("budgets") && Contains("(0, 1]"));
  CHECK_THROWS_WITH(bad("  budgets: [1.5]\n"), Contains("1.5"));
  CHECK_THROWS_WITH(bad("  budgets: [0.5, 0.25, 0.5]\n"), Contains("twice"));
  CHECK_THROWS_WITH(bad("  element_bits: 12\n"), Contains("element_bits") && Contains("12"));
  CHECK_THROWS_WITH(bad("  tasks: [needle]\n"), Contains("'needle'"));
  CHECK_THROWS_WITH(bad("  methods: [razor]\n  method_keys:\n    razor: {induction_share: 2}\n"),
                    Contains("induction_share"));
  CHECK_THROWS_WITH(bad("  methods: [snapkv]\n  method_keys:\n    snapkv: {kernel: 0}\n"),
                    Contains("kernel"));
  // Checked against the model, before any work.
  std::string big = kHead;
  big.replace(big.find("window: 96"), 10, "window: 9999");
  CHECK_THROWS_WITH(test::run_config(tmp.path, "bad", big + "  tasks: [continuation]\n"),
                    Contains("kv_frontier.continuation.window is 9999") && Contains("512"));
  CHECK_FALSE(fs::exists(tmp.path / "results" / "bad" / "frontier.csv"));
}

TEST_CASE("kv_frontier part 2: codecs, merged heads and compositions on one bytes axis",
          "[frontier][experiment][codec]") {
  test::TempDir tmp("frontier_codecs");
  const std::string text = kData + "/text/janeausten/persuasion.txt";
  const fs::path out = test::run_config(
      tmp.path, "fc",
      "kind: kv_frontier\nseed: 2\nmodels:\n  - name: austen\n    path: " + kData +
          "/models/austen_induction\n  - name: stories260K\n    path: " + kData +
          "/models/stories260K/stories260K.bin\ntexts:\n  - name: p\n    path: " + text +
          "\n    max_bytes: 60000\nkv_frontier:\n"
          "  methods: [q8_0, mixed, kivi, lowrank, merged_mean_pool, snapkv+q8_0]\n"
          "  method_keys:\n    mixed: {method: ggml, k_type: q4_0, v_type: f16}\n"
          "    snapkv: {window: 8}\n"
          "  calibration: {path: " +
          text +
          ", max_bytes: 40000}\n  calibration_tokens: 1024\n"
          "  budgets: [1, 0.5, 0.125]\n  tasks: [continuation]\n"
          "  continuation: {window: 64, windows: 2}\n");
  const CsvData d = read_csv(out / "frontier.csv");
  auto find = [&](const std::string& model, const std::string& method, const std::string& budget,
                  const std::string& measure) -> const std::vector<std::string>* {
    for (const auto& r : d.rows)
      if (r[d.column("model")] == model && r[d.column("method")] == method &&
          r[d.column("budget")] == budget && r[d.column("measure")] == measure)
        return &r;
    return nullptr;
  };
  auto num = [&](const std::vector<std::string>* r, const char* col) {
    REQUIRE(r);
    return std::stod((*r)[d.column(col)]);
  };
  // Bytes worked out by hand (16-bit elements, head_dim 32): q8_0 34 bytes per 32 elements
  // of K and of V; q4_0 keys (18) with f16 values (64) of 128.
  CHECK(num(find("austen", "q8_0", "1", "kl"), "kv_share") == Approx(34.0 / 64).epsilon(1e-9));
  CHECK(num(find("austen", "mixed", "1", "kl"), "kv_share") == Approx(82.0 / 128).epsilon(1e-9));
  CHECK((*find("austen", "q8_0", "1", "kl"))[d.column("family")] == "quantization");
  // The low-rank cache at full rank is the full cache; at half rank it holds half the bytes.
  CHECK(num(find("austen", "lowrank", "1", "kl"), "value") < 1e-8);
  CHECK(num(find("austen", "lowrank", "0.5", "kl"), "kv_share") == Approx(0.5).epsilon(1e-9));
  CHECK(num(find("austen", "lowrank", "0.5", "kl"), "value") > 1e-6);
  CHECK(num(find("austen", "lowrank", "0.5", "kl"), "side_bytes") ==
        2 * 2 * 64 * 128 * 2);  // 2 layers x (K and V bases of rank 64 over 128) x 2 bytes
  // Two of four KV heads hold half the bytes of the original model's cache.
  CHECK(num(find("austen", "merged_mean_pool", "0.5", "kl"), "kv_share") ==
        Approx(0.5).epsilon(1e-9));
  // A composition holds less than its eviction alone would (its slots are q8_0 blocks).
  CHECK(num(find("austen", "snapkv+q8_0", "0.5", "kl"), "kv_share") < 0.5 * 34 / 64 + 0.05);
  CHECK((*find("austen", "snapkv+q8_0", "0.5", "kl"))[d.column("family")] == "composition");
  // Out of reach, and said so: ggml blocks on head_dim 8; 1/8 of 4 KV heads.
  CHECK_FALSE(find("stories260K", "q8_0", "1", "kl"));
  const std::string why = test::slurp(out / "unreachable.csv");
  CHECK_THAT(why, Contains("stories260K,q8_0,1,") && Contains("head_dim 8"));
  CHECK_THAT(why, Contains("austen,merged_mean_pool,0.125,"));
  CHECK(find("stories260K", "kivi", "1", "kl"));
}
