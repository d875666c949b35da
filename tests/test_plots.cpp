// Figures checked through the gnuplot scripts that draw them (set_gnuplot_script_hook):
// reference lines inside the y range, titles that say what a reader needs to know. The
// CSVs are written by hand, so every expected value below is read off them.
#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <filesystem>
#include <regex>
#include <string>
#include <tuple>
#include <vector>

#include "kvscope/report/manifest.hpp"
#include "kvscope/report/plot.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

// Collects the scripts run while it lives.
struct Scripts {
  std::vector<std::string> all;
  Scripts() {
    set_gnuplot_script_hook([this](const std::string& s) { all.push_back(s); });
  }
  ~Scripts() { set_gnuplot_script_hook({}); }
};

// Every "set yrange [lo:hi]" of a script, in order.
std::vector<std::pair<double, double>> yranges(const std::string& script) {
  std::vector<std::pair<double, double>> out;
  const std::regex re(R"(set yrange \[([-0-9.eE+]+):([-0-9.eE+]+)\])");
  for (auto it = std::sregex_iterator(script.begin(), script.end(), re);
       it != std::sregex_iterator(); ++it)
    out.push_back({std::stod((*it)[1]), std::stod((*it)[2])});
  return out;
}

}  // namespace

TEST_CASE("reduction bars: the original's perplexity lies inside the y range", "[plot]") {
  test::TempDir tmp("plot_reduction");
  // The original (3.41) is far below every reduced model (26.8 .. 160.5): autoscaling on
  // the bars alone would start the axis at 10 and leave the original's line out.
  test::write_bytes(tmp / "reduction.csv",
                    "model,text,method,kv_heads,calibration_tokens,perplexity\n"
                    "m,t,original,4,0,3.41\n"
                    "m,t,mean_pool,2,4096,106.2\n"
                    "m,t,svd_a,2,4096,26.8\n"
                    "m,t,mean_pool,1,4096,160.5\n"
                    "m,t,svd_a,1,4096,36.3\n");
  Scripts scripts;
  const auto files = plot_reduction(tmp / "reduction.csv", tmp.path);
  REQUIRE(files.size() == 2);  // png and svg
  REQUIRE(scripts.all.size() == 2);
  for (const std::string& s : scripts.all) {
    const auto r = yranges(s);
    REQUIRE(r.size() == 1);
    CHECK(r[0].first < 3.41);
    CHECK(r[0].second > 160.5);
    CHECK(r[0].first > 0);  // a log axis
  }
  CHECK(fs::file_size(tmp / "reduction_m__t.png") > 1000);
}

TEST_CASE("recovery curves: the control lies inside every panel's y range", "[plot]") {
  test::TempDir tmp("plot_recovery");
  // The control (9.96 -> 9.89) is under every curve of both panels (the lowest: 10.71).
  test::write_bytes(tmp / "recovery.csv",
                    "model,text,method,kv_heads,trainable,tokens_trained,heldout_ppl\n"
                    "m,t,original,8,all,0,9.96\n"
                    "m,t,original,8,all,1000,9.89\n"
                    "m,t,svd_a,4,all,0,27.0\n"
                    "m,t,svd_a,4,all,1000,10.71\n"
                    "m,t,mean_pool,4,all,0,62.5\n"
                    "m,t,mean_pool,4,all,1000,12.06\n"
                    "m,t,svd_a,2,all,0,26.0\n"
                    "m,t,svd_a,2,all,1000,11.54\n");
  Scripts scripts;
  plot_recovery(tmp / "recovery.csv", tmp.path);
  REQUIRE(scripts.all.size() == 2);
  for (const std::string& s : scripts.all) {
    const auto r = yranges(s);
    REQUIRE(r.size() == 2);  // one per panel: 4 and 2 KV heads
    for (const auto& [lo, hi] : r) {
      CHECK(lo < 9.89);
      CHECK(lo > 0);
    }
    CHECK(r[0].second > 62.5);  // panel 4 KV heads: the highest point is mean_pool's start
    CHECK(r[1].second > 26.0);
    // The x axis ends at the data (1000 tokens), and the control says what it is.
    CHECK_THAT(s, Contains("set autoscale xfix"));
    CHECK_THAT(s, Contains("title 'original model, fine-tuned the same (control)'"));
    CHECK_THAT(s, !Contains("title 'original'"));
  }
}

TEST_CASE("training curves carry a title naming the model", "[plot]") {
  test::TempDir tmp("plot_training");
  test::write_bytes(tmp / "loss.csv", "step,lr,loss,grad_norm\n0,0.001,6.2,1.5\n1,0.001,5.9,1.2\n");
  test::write_bytes(tmp / "eval.csv",
                    "step,heldout_nll,heldout_ppl,unigram_ppl\n1,5.8,330.3,110.9\n");
  RunManifest m;
  m.name = "train_tiny";
  m.kind = "train";
  m.config = nlohmann::json::parse(R"({"name": "train_tiny", "kind": "train",
      "texts": [{"name": "emma", "path": "e.txt"}, {"name": "persuasion's", "path": "p.txt"}],
      "train": {"architecture": {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
                                 "context": 256, "positional": "alibi"}}})");
  m.outputs = {"loss.csv", "eval.csv"};
  write_manifest(m, tmp / "manifest.json");
  Scripts scripts;
  plot_training_run(tmp / "loss.csv", tmp.path);
  REQUIRE(scripts.all.size() == 2);
  // Two lines in a gnuplot double-quoted string.
  CHECK_THAT(scripts.all[0],
             Contains("set title \"train_tiny: dim 64, 2 layers, 4/2 heads, context 256, alibi"
                      "\\ntrained on emma, persuasion's\"\n"));
  CHECK(fs::exists(tmp / "training.png"));
}

TEST_CASE("spectrum titles say the token count and whether keys were centred", "[plot]") {
  test::TempDir tmp("plot_spectrum");
  std::string spectrum =
      "model,calibration,layer,tensor,scope,groups,index,dim,rank,singular_value,energy_share,"
      "cumulative_energy\n";
  for (const char* t : {"k_pre_rope", "k", "v"})
    for (int rank = 1; rank <= 2; ++rank)
      spectrum += fmt::format("m,c,0,{},layer,1,0,2,{},{},{},{}\n", t, rank, 3 - rank,
                              rank == 1 ? 0.9 : 0.1, rank == 1 ? 0.9 : 1.0);
  test::write_bytes(tmp / "spectrum.csv", spectrum);
  test::write_bytes(tmp / "summary.csv",
                    "model,calibration,tokens,sequences,centred,layer,tensor\n"
                    "m,c,32768,64,1,0,k\n");
  Scripts scripts;
  plot_spectrum(tmp / "spectrum.csv", tmp.path);
  REQUIRE(scripts.all.size() == 6);  // spectrum, singular values and energy; png and svg
  for (const std::string& s : scripts.all)
    CHECK_THAT(s, Contains("m on c (32768 tokens, centred (mean removed))"));
  test::write_bytes(tmp / "summary.csv",
                    "model,calibration,tokens,sequences,centred,layer,tensor\n"
                    "m,c,4096,8,0,0,k\n");
  scripts.all.clear();
  plot_spectrum(tmp / "spectrum.csv", tmp.path);
  for (const std::string& s : scripts.all)
    CHECK_THAT(s, Contains("m on c (4096 tokens, not centred)"));
}

TEST_CASE("ablation curve: razor's recall over the full cache's, at the share kept whole",
          "[plot]") {
  test::TempDir tmp("plot_ablation");
  // 8 KV heads; razor@5% keeps 2 whole (25%) with recall 0.30 of full 0.60 (0.5), razor@50%
  // keeps 5 (62.5%) with 0.57 (0.95). Streaming is not a razor@ row and is left out.
  test::write_bytes(tmp / "policies.csv",
                    "model,policy,induction_share,protected_heads,kv_heads,recall_accuracy\n"
                    "m,full,-1,8,8,0.6\n"
                    "m,streaming@5%,0.05,0,8,0.1\n"
                    "m,razor@5%,0.05,2,8,0.3\n"
                    "m,razor@50%,0.5,5,8,0.57\n");
  Scripts scripts;
  const auto files = plot_ablation(tmp / "policies.csv", tmp.path);
  REQUIRE(files.size() == 2);
  for (const std::string& s : scripts.all) {
    const std::string ours = s.substr(s.find("$K << EOD"));
    CHECK_THAT(ours, Contains("25 0.5\n62.5 0.95\nEOD"));
    CHECK_THAT(s, Contains("6 0.79885\n"));  // the paper: 69.54 / 87.05 at 5% + 1% echo
  }
  CHECK(fs::file_size(tmp / "ablation_m.png") > 1000);
}

TEST_CASE("singular values: normalised by the largest on a log axis, exact zeros left out",
          "[plot]") {
  test::TempDir tmp("plot_sv");
  // Layer 0 of K: 4, 2, 1, 0 (rank 3, an exact zero last); V: 5, 5, 0.5, 0.05.
  std::string spectrum =
      "model,calibration,layer,tensor,scope,groups,index,dim,rank,singular_value,energy_share,"
      "cumulative_energy\n";
  const double k[] = {4, 2, 1, 0}, v[] = {5, 5, 0.5, 0.05};
  for (int rank = 1; rank <= 4; ++rank) {
    spectrum += fmt::format("m,c,0,k,layer,1,0,4,{},{},0.25,{}\n", rank, k[rank - 1], 0.25 * rank);
    spectrum += fmt::format("m,c,0,v,layer,1,0,4,{},{},0.25,{}\n", rank, v[rank - 1], 0.25 * rank);
  }
  test::write_bytes(tmp / "spectrum.csv", spectrum);
  Scripts scripts;
  const auto files = plot_spectrum(tmp / "spectrum.csv", tmp.path);
  REQUIRE(scripts.all.size() == 6);
  const std::string& sv = scripts.all[1];  // png: spectrum, singular values, energy
  CHECK_THAT(sv, Contains("set logscale y"));
  CHECK_THAT(sv, Contains("$S_k << EOD\n# layer 0\n1 1\n2 0.5\n3 0.25\n\n\nEOD"));
  CHECK_THAT(sv, Contains("$S_v << EOD\n# layer 0\n1 1\n2 1\n3 0.1\n4 0.01\n\n\nEOD"));
  CHECK(fs::file_size(tmp / "singular_values_m__c.png") > 1000);
}

TEST_CASE("policy heat maps: one colour scale and each panel's cache budget", "[plot]") {
  test::TempDir tmp("plot_recall");
  std::string csv = "model,policy,length,depth,questions,accuracy,chance,mean_rank,kv_share\n";
  // full keeps everything; razor 84% at 64 tokens and 51% at 512; h2o 50% at both.
  for (const auto& [policy, s64, s512] :
       {std::tuple{"full", 1.0, 1.0}, std::tuple{"razor", 0.839, 0.5059},
        std::tuple{"h2o", 0.5, 0.5}})
    for (const char* depth : {"0", "1"}) {
      csv += fmt::format("m,{},64,{},8,0.5,0.125,2,{}\n", policy, depth, s64);
      csv += fmt::format("m,{},512,{},8,0.25,0.125,3,{}\n", policy, depth, s512);
    }
  test::write_bytes(tmp / "recall.csv", csv);
  Scripts scripts;
  plot_recall(tmp / "recall.csv", tmp.path);
  REQUIRE(scripts.all.size() == 2);
  for (const std::string& s : scripts.all) {
    CHECK_THAT(s, Contains("set title 'full: 100% kept'"));
    CHECK_THAT(s, Contains("set title 'razor: 51-84% kept'"));
    CHECK_THAT(s, Contains("set title 'h2o: 50% kept'"));
    CHECK_THAT(s, Contains("set cbrange [0:1]"));
    // One colour box for three panels.
    size_t unset = 0, user = 0;
    for (size_t at = 0; (at = s.find("unset colorbox", at)) != std::string::npos; ++at) ++unset;
    for (size_t at = 0; (at = s.find("set colorbox user", at)) != std::string::npos; ++at) ++user;
    CHECK(unset == 2);
    CHECK(user == 1);
  }
}

TEST_CASE("induction figures name their run", "[plot]") {
  test::TempDir tmp("plot_induction");
  fs::create_directories(tmp / "train_x.partial");
  test::write_bytes(tmp / "train_x.partial/induction.csv",
                    "step,block_tokens,induction_ratio,copy_drop,best_previous\n"
                    "0,0,1.2,0.01,0.2\n50,1000,8.5,0.6,0.7\n");
  Scripts scripts;
  plot_induction(tmp / "train_x.partial/induction.csv", tmp / "train_x.partial");
  REQUIRE(!scripts.all.empty());
  CHECK_THAT(scripts.all[0], Contains("title 'train_x: induction forming"));
  scripts.all.clear();
  plot_induction(tmp / "train_x.partial/induction.csv", tmp / "train_x.partial", "Jane's run");
  CHECK_THAT(scripts.all[0], Contains("title 'Jane''s run: induction forming"));
}
