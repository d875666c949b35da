// Every experiment kind, end to end with tiny settings (tests/data/smoke/KIND.yaml): a kind
// without a smoke config fails here, each runs twice to byte-identical CSVs, and every key
// its parser accepts is documented in docs/experiments.md. Then `kvscope tables`: what it
// reruns and what it skips.
#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/checksum.hpp"
#include "kvscope/io/provenance.hpp"
#include "kvscope/report/manifest.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const fs::path kSmoke = fs::path(KVSCOPE_TEST_FIXTURES_DIR) / "smoke";

fs::path smoke_config(const std::string& kind) {
  return kSmoke / (kind + ".yaml");
}

// docs/experiments.md: the keys in the first column of the tables of each "## `kind`"
// section, and of the sections before the first kind ("" = the common keys), with their
// type column.
std::map<std::string, std::map<std::string, std::string>> documented_keys() {
  std::ifstream in(fs::path(KVSCOPE_SOURCE_DIR) / "docs" / "experiments.md");
  std::map<std::string, std::map<std::string, std::string>> out;
  std::string section, line;
  const std::regex heading(R"(^## `([a-z_]+)`)"), row(R"(^\| `([^`]+)` \| ([^|]*)\|)");
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, heading)) section = m[1];
    if (std::regex_search(line, m, row)) out[section][m[1]] = m[2];
  }
  return out;
}

}  // namespace

TEST_CASE("every experiment kind runs from its smoke config, twice to identical CSVs",
          "[smoke][experiment]") {
  test::TempDir tmp("smoke");
  for (const ExperimentKind& k : experiment_kinds()) {
    INFO("kind " << k.name);
    REQUIRE(fs::exists(smoke_config(k.name)));
    fs::path dirs[2];
    for (int run = 0; run < 2; ++run) {
      RunOptions o;
      o.results_root = tmp / ("run" + std::to_string(run));
      o.verbose = false;
      dirs[run] = run_experiment(smoke_config(k.name), o);
    }
    const RunManifest m = read_manifest(dirs[0] / "manifest.json");
    int csvs = 0;
    for (const std::string& f : m.outputs) {
      REQUIRE(fs::exists(dirs[0] / f));
      if (fs::path(f).extension() != ".csv") continue;
      ++csvs;
      const std::string a = test::slurp(dirs[0] / f), b = test::slurp(dirs[1] / f);
      CHECK(std::count(a.begin(), a.end(), '\n') >= 2);  // a header and at least one row
      if (f.rfind("timing_", 0) != 0) {                  // timings differ run to run by design
        INFO(f);
        CHECK(a == b);
      }
    }
    CHECK(csvs >= 1);
  }
}

TEST_CASE("docs/experiments.md documents every key the config parsers accept", "[smoke][docs]") {
  const auto docs = documented_keys();
  REQUIRE(docs.count(""));
  for (const ExperimentKind& k : experiment_kinds()) {
    INFO("kind " << k.name);
    REQUIRE(docs.count(k.name));
    const auto& mine = docs.at(k.name);
    const ConfigSummary c = read_config(smoke_config(k.name));
    CHECK(c.asked_keys.size() >= 5);
    for (std::string key : c.asked_keys) {
      key = std::regex_replace(key, std::regex(R"(\[\d+\])"), "");  // models[0].path
      INFO("key " << key);
      if (key == k.name) continue;            // the kind's own section
      if (key.rfind(k.name + ".", 0) != 0) {  // common keys, models[].x, texts[].x
        const std::string leaf = key.substr(key.rfind('.') + 1);
        CHECK(docs.at("").count(leaf));
        continue;
      }
      const std::string rest = key.substr(k.name.size() + 1);
      bool ok = mine.count(rest) > 0;
      for (const auto& [doc_key, type] : mine)  // a map documented key by key (copy.context)
        ok |= doc_key.rfind(rest + ".", 0) == 0;
      // A key inside a documented map (a text map, the probe) is documented with it.
      for (size_t dot = rest.find('.'); !ok && dot != std::string::npos;
           dot = rest.find('.', dot + 1)) {
        const auto it = mine.find(rest.substr(0, dot));
        ok = it != mine.end() && it->second.find("map") != std::string::npos;
      }
      CHECK(ok);
    }
  }
}

TEST_CASE("kvscope tables runs what is stale, skips what is not, writes REPORT.md",
          "[smoke][cli]") {
  test::TempDir tmp("tables");
  const fs::path configs = tmp / "configs", results = tmp / "results";
  fs::create_directories(configs);
  const fs::path text = tmp / "story.txt";
  fs::copy_file(fs::path(KVSCOPE_TEST_DATA_DIR) / "text/tinystories/tinystories_valid_head.txt",
                text);
  auto write_config = [&](const std::string& extra) {
    test::write_bytes(
        configs / "paper_x.yaml",
        "kind: perplexity\nthreads: 1\nmodels:\n  - path: " + std::string(KVSCOPE_TEST_DATA_DIR) +
            "/models/stories260K/stories260K.bin\ntexts:\n  - path: " + text.string() +
            "\n    max_bytes: 20000\nperplexity:\n" + "  window: 64\n  max_tokens: 200\n" + extra);
  };
  const std::string args =
      "tables --configs '" + configs.string() + "' --results '" + results.string() + "'";
  write_config("");
  // --dry-run says what would run and why, and runs nothing.
  test::CliResult r = test::run_kvscope(args + " --dry-run");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("would run   paper_x: no results yet") &&
                        Contains("1 would run, 0 up to date"));
  CHECK(!fs::exists(results / "paper_x"));
  CHECK(!fs::exists(results / "REPORT.md"));
  r = test::run_kvscope(args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("[1/1] paper_x: running (no results yet"));
  CHECK(fs::exists(results / "paper_x" / "perplexity.csv"));
  const std::string report = test::slurp(results / "REPORT.md");
  CHECK_THAT(report, Contains("| A2 | Table 4"));
  CHECK_THAT(report, Contains("`results/paper_a_table4/` is missing"));

  write_config("# a comment changes nothing the run reads\n");
  r = test::run_kvscope(args);
  CHECK_THAT(r.err, Contains("paper_x: up to date\n"));
  r = test::run_kvscope(args + " --dry-run");
  CHECK_THAT(r.out, Contains("up to date  paper_x") && Contains("0 would run, 1 up to date"));

  write_config("  stride: 16\n");
  r = test::run_kvscope(args + " --dry-run");
  CHECK_THAT(r.out, Contains("would run   paper_x: the config changed"));

  write_config("  stride: 16\n");
  r = test::run_kvscope(args);
  CHECK_THAT(r.err, Contains("paper_x: running (the config changed"));

  test::write_bytes(text, test::slurp(text) + "\nOne more line.\n");
  r = test::run_kvscope(args);
  CHECK_THAT(r.err, Contains("changed"));
  CHECK_THAT(r.err, Contains("story.txt"));

  // --report-only runs nothing, even what is stale, and still writes the report.
  fs::remove(results / "REPORT.md");
  r = test::run_kvscope(args + " --report-only");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, !Contains("running"));
  CHECK(fs::exists(results / "REPORT.md"));

  r = test::run_kvscope(args + " --only nosuch");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("--only nosuch"));
}

TEST_CASE("tables: a source change makes results stale, a binary change alone does not",
          "[smoke][cli]") {
  test::TempDir tmp("stale_code");
  const fs::path smoke = fs::path(KVSCOPE_SOURCE_DIR) / "tests/data/smoke";
  RunOptions opt;
  opt.results_root = tmp / "results";
  opt.verbose = false;
  auto replace_in_manifest = [&](const char* kind, const std::string& from) {
    const fs::path man = opt.results_root / kind / "manifest.json";
    std::string m = test::slurp(man);
    const size_t at = m.find(from);
    REQUIRE(at != std::string::npos);
    m.replace(at, from.size(), std::string(from.size(), '0'));
    test::write_bytes(man, m);
  };
  REQUIRE(source_fingerprint().size() == 64);
  for (const char* kind : {"perplexity", "train"}) {
    INFO(kind);
    const fs::path cfg = smoke / (std::string(kind) + ".yaml");
    run_experiment(cfg, opt);
    CHECK(stale_reason(cfg, opt) == "");
    // Another build of the same sources (another compiler, other flags): not stale.
    replace_in_manifest(kind, code_sha256());
    CHECK(stale_reason(cfg, opt) == "");
    // Other sources: stale, except a train run (its product is a shipped model).
    replace_in_manifest(kind, source_fingerprint());
    if (std::string(kind) == "train")
      CHECK(stale_reason(cfg, opt) == "");
    else
      CHECK_THAT(stale_reason(cfg, opt), Contains("the sources changed"));
  }
}

TEST_CASE("the source fingerprint is the sha256 of the sorted per-file sha256 lines", "[smoke]") {
  // A second implementation of cmake/source_fingerprint.cmake, over the tree the tests
  // were built from.
  const fs::path root = KVSCOPE_SOURCE_DIR;
  std::vector<std::string> files = {"CMakeLists.txt"};
  for (const char* dir : {"src", "include", "experiments", "cmake"})
    for (const auto& e : fs::recursive_directory_iterator(root / dir))
      if (e.is_regular_file()) files.push_back(fs::relative(e.path(), root).string());
  std::sort(files.begin(), files.end());
  std::string lines;
  for (const std::string& f : files) lines += sha256_file(root / f) + "  " + f + "\n";
  CHECK(source_fingerprint() == sha256_string(lines));
}

TEST_CASE("run refuses to replace existing results without --force", "[smoke][cli]") {
  test::TempDir tmp("run_force");
  const std::string cfg =
      (fs::path(KVSCOPE_SOURCE_DIR) / "tests/data/smoke/perplexity.yaml").string();
  const std::string args = "run -q " + cfg + " --results " + (tmp / "r").string();
  auto r = test::run_kvscope(args);
  REQUIRE(r.exit_code == 0);
  const fs::path man = tmp / "r/perplexity/manifest.json";
  const std::string before = test::slurp(man);
  r = test::run_kvscope(args);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("perplexity.yaml") && Contains("exist") && Contains("--force"));
  CHECK(test::slurp(man) == before);  // untouched
  r = test::run_kvscope(args + " --force");
  CHECK(r.exit_code == 0);
  CHECK(test::slurp(man) != before);  // a new run (its start time and timings differ)
}

TEST_CASE("a config's ~/ paths are under HOME, as README's quant_drift example writes them",
          "[smoke][cli]") {
  test::TempDir tmp("home_paths");
  fs::create_directories(tmp / "home/models");
  fs::copy_file(fs::path(KVSCOPE_TEST_DATA_DIR) / "models/stories260K/stories260K.bin",
                tmp / "home/models/stories260K.bin");
  fs::copy_file(fs::path(KVSCOPE_TEST_DATA_DIR) / "models/stories260K/tok512.bin",
                tmp / "home/models/tok512.bin");
  fs::copy_file(fs::path(KVSCOPE_TEST_DATA_DIR) / "text/tinystories/tinystories_valid_head.txt",
                tmp / "home/story.txt");
  test::write_bytes(tmp / "c.yaml",
                    "kind: perplexity\nname: p\nthreads: 1\nmodels:\n"
                    "  - {path: ~/models/stories260K.bin, tokenizer: ~/models/tok512.bin}\n"
                    "texts:\n  - {path: ~/story.txt, max_bytes: 4000}\n"
                    "perplexity: {window: 32, max_tokens: 100}\n");
  const test::CliResult r = test::run_kvscope_sh(
      "HOME='" + (tmp / "home").string() + "' ",
      "run -q '" + (tmp / "c.yaml").string() + "' --results '" + (tmp / "r").string() + "'");
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(fs::exists(tmp / "r/p/perplexity.csv"));
  CHECK_THAT(test::slurp(tmp / "r/p/manifest.json"),
             Contains(tmp.path.string() + "/home/story.txt"));
}

TEST_CASE("OpenMP threads wait passively unless the user chose a policy", "[smoke][cli]") {
  // bench/threads_under_load.sh: spinning waits made 2 threads 2x slower than 1 on a busy
  // 2-core machine. kvscope sets OMP_WAIT_POLICY=passive before libgomp's initializer
  // reads it (main.cpp); libgomp's own account of its settings (OMP_DISPLAY_ENV) shows
  // that it took the policy, and the manifest records the policy the run had.
  test::TempDir tmp("wait_policy");
  const std::string cfg =
      (fs::path(KVSCOPE_SOURCE_DIR) / "tests/data/smoke/perplexity.yaml").string();
  for (const std::string& set : {std::string(""), std::string("active")}) {
    const fs::path res = tmp / ("r" + set);
    const test::CliResult r = test::run_kvscope_sh(
        (set.empty() ? "env -u OMP_WAIT_POLICY " : "env OMP_WAIT_POLICY=" + set + " ") +
            "OMP_DISPLAY_ENV=true ",
        "run -q '" + cfg + "' --results '" + res.string() + "'");
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.err, Contains(set.empty() ? "OMP_WAIT_POLICY = 'PASSIVE'"
                                           : "OMP_WAIT_POLICY = 'ACTIVE'"));
    const auto m = nlohmann::json::parse(test::slurp(res / "perplexity/manifest.json"));
    CHECK(m["extra"]["omp_wait_policy"] == (set.empty() ? "passive" : set));
  }
}
