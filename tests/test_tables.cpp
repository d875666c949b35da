// `kvscope tables` on a fresh clone (issue 32): training results and the checkpoints they
// load are not all committed, HDF5 dumps are git-ignored. Training configs are left alone
// unless asked; an earlier stage whose checkpoint a later one loads runs first; a failed
// run does not stop the others nor the report; a missing dump is not staleness.
#include <catch2/catch.hpp>

#include "kvscope/experiments/experiment.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

std::string train_config(const std::string& name, const std::string& init) {
  return "kind: train\nname: " + name + "\nthreads: 1\nseed: 5\ntexts:\n  - path: " + kData +
         "/text/tinystories/tinystories_train_head.txt\n    max_bytes: 20000\n"
         "train:\n  tokenizer: " +
         kData +
         "/models/stories260K/tok512.bin\n"
         "  architecture: {dim: 16, hidden_dim: 24, n_layers: 1, n_heads: 2, n_kv_heads: 2, "
         "context: 16}\n"
         "  eval_text: {path: " +
         kData +
         "/text/tinystories/tinystories_valid_head.txt, "
         "max_bytes: 4000}\n"
         "  eval_tokens: 100\n  eval_every: 2\n  batch: 2\n  warmup: 1\n  lr: 0.01\n"
         "  checkpoint_every: 2\n  steps: 2\n" +
         (init.empty() ? "" : "  init: " + init + "\n");
}

}  // namespace

TEST_CASE(
    "tables: training stays as it is unless asked - stages run in order - failures "
    "are reported after the rest ran",
    "[smoke][cli][tables]") {
  test::TempDir tmp("tables_train");
  const fs::path configs = tmp / "configs", results = tmp / "results";
  fs::create_directories(configs);
  const std::string ck1 = (results / "checkpoints" / "stage1").string();
  test::write_bytes(configs / "stage1.yaml", train_config("stage1", ""));
  test::write_bytes(configs / "stage2.yaml", train_config("stage2", ck1));
  test::write_bytes(configs / "ppl.yaml",
                    "kind: perplexity\nthreads: 1\nmodels:\n  - path: " + kData +
                        "/models/stories260K/stories260K.bin\ntexts:\n  - path: " + kData +
                        "/text/tinystories/tinystories_valid_head.txt\n    max_bytes: 4000\n"
                        "perplexity: {window: 32, max_tokens: 100}\n");
  const std::string args =
      "tables --configs '" + configs.string() + "' --results '" + results.string() + "'";
  test::CliResult r = test::run_kvscope(args + " --train");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(fs::exists(results / "stage2" / "eval.csv"));

  // A fresh clone: the checkpoints are git-ignored.
  fs::remove_all(results / "checkpoints");
  const std::string stage2_manifest = test::slurp(results / "stage2" / "manifest.json");
  r = test::run_kvscope(args + " --dry-run");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("up to date  ppl") && Contains("up to date  stage1") &&
                        Contains("skipped     stage2: a training run, input " + ck1) &&
                        Contains("pass --train") &&
                        Contains("0 would run, 2 up to date, 1 skipped"));
  // Without --train nothing trains, the report is written, and the exit status is 0.
  fs::remove(results / "REPORT.md");
  r = test::run_kvscope(args);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("stage2: skipped (a training run"));
  CHECK(fs::exists(results / "REPORT.md"));
  CHECK(test::slurp(results / "stage2" / "manifest.json") == stage2_manifest);
  CHECK(!fs::exists(ck1));

  // --train (or naming the stage) reruns stage 1 first, though it is up to date: stage 2
  // loads its checkpoint.
  for (const std::string& ask : {std::string(" --train"), std::string(" --only stage2")}) {
    r = test::run_kvscope(args + " --dry-run" + ask);
    INFO(ask);
    CHECK_THAT(r.out, Contains("would run   stage1: its checkpoint (not committed) is needed by "
                               "stage2"));
    CHECK(r.out.find("would run   stage1") < r.out.find("would run   stage2"));
    CHECK_THAT(r.out, Contains("2 would run"));
    CHECK(!fs::exists(ck1));  // a dry run runs nothing
  }

  // A run that fails at run time (its init does not exist) is reported by name; the other
  // stale runs still run, the report is rewritten, and the exit status is 1.
  test::write_bytes(configs / "broken.yaml", train_config("broken", (tmp / "nosuch").string()));
  fs::remove(results / "REPORT.md");
  r = test::run_kvscope(args + " --train");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("broken: FAILED") && Contains("does not exist"));
  CHECK_THAT(r.err, Contains("1 of 3 runs failed: broken"));
  CHECK(fs::exists(ck1));
  CHECK(test::slurp(results / "stage2" / "manifest.json") != stage2_manifest);
  CHECK(fs::exists(results / "REPORT.md"));
  CHECK(!fs::exists(results / "broken"));

  // A stage whose missing checkpoint no config makes is refused by name before any run.
  fs::remove(configs / "broken.yaml");
  fs::remove(configs / "stage1.yaml");
  fs::remove_all(results / "checkpoints");
  r = test::run_kvscope(args + " --train --dry-run");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("tables: stage2 loads the checkpoint") && Contains("no config in") &&
                        Contains("is named 'stage1' to make it"));
}

TEST_CASE("tables: a missing HDF5 dump (git-ignored) is not staleness but a missing table is",
          "[smoke][cli][tables]") {
  test::TempDir tmp("tables_dump");
  const fs::path cfg = fs::path(KVSCOPE_SOURCE_DIR) / "tests/data/smoke/dump_kv.yaml";
  RunOptions opt;
  opt.results_root = tmp / "results";
  opt.verbose = false;
  const fs::path dir = run_experiment(cfg, opt);
  CHECK(stale_reason(cfg, opt) == "");
  size_t dumps = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".h5") fs::remove(e.path()), ++dumps;
  REQUIRE(dumps == 1);
  CHECK(stale_reason(cfg, opt) == "");
  fs::remove(dir / "dumps.csv");
  CHECK(stale_reason(cfg, opt) == "output dumps.csv is missing");
}
