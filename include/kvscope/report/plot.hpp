// Plots through gnuplot (Debian package gnuplot-nox). Each figure is one gnuplot script
// with its data inline (datablocks), written as PNG and SVG; outputs appear under their
// final names only when gnuplot succeeded.
#pragma once

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kvscope {

// Runs `script` through gnuplot. Files the script writes must be named NAME.partial; they
// are renamed to NAME on success (`outputs` lists the final names) and removed on failure.
// Throws Error with gnuplot's own message (or a hint to install it).
void run_gnuplot(const std::string& script, const std::vector<std::filesystem::path>& outputs,
                 const std::string& what);

// For tests: when set, receives every script run_gnuplot is about to run (the figure's
// titles and axis ranges can then be checked without reading images). Not thread-safe.
void set_gnuplot_script_hook(std::function<void(const std::string&)> hook);

// From a kv_spectrum spectrum.csv (and the summary.csv beside it, for the titles: tokens
// and whether the activations were centred), for every (model, calibration), layer scope:
//   spectrum_MODEL__CALIB.{png,svg}: cumulative energy against the fraction of singular
//     values, one curve per layer, panels K before RoPE / K after RoPE / V;
//   energy_MODEL__CALIB.{png,svg}: per layer, the energy held by the top 25% and the top
//     50% of the singular values (the paper's Fig. 1 measure), one panel per tensor.
// Returns the files written.
std::vector<std::filesystem::path> plot_spectrum(const std::filesystem::path& csv,
                                                 const std::filesystem::path& out_dir);

// From a kv_head_reduction reduction.csv, for every (model, text):
//   reduction_MODEL__TEXT.{png,svg}: perplexity (log scale) of each method at each target
//     KV-head count, clustered by target, the original model as a dashed line; the y range
//     always includes the original's perplexity.
std::vector<std::filesystem::path> plot_reduction(const std::filesystem::path& csv,
                                                  const std::filesystem::path& out_dir);

// From a retrieval_heads heads.csv, for every model:
//   heads_MODEL.{png,svg}: layer x KV-head heat maps of the induction and echo scores, each
//     cell labelled with its score and '*' on the selected retrieval heads.
std::vector<std::filesystem::path> plot_heads(const std::filesystem::path& heads_csv,
                                              const std::filesystem::path& out_dir);

// From a kv_cache_policies recall.csv, for every model:
//   recall_MODEL.{png,svg}: name-recall accuracy over context length x needle depth, one
//     heat map per policy.
std::vector<std::filesystem::path> plot_recall(const std::filesystem::path& recall_csv,
                                               const std::filesystem::path& out_dir);

// From a train run's induction.csv (train.probe): induction.{png,svg}, the best induction
// score over uniform and the copy-loss drop (with the previous-token score) per evaluation,
// titled with `run` (default: the name of the directory the CSV is in).
std::vector<std::filesystem::path> plot_induction(const std::filesystem::path& induction_csv,
                                                  const std::filesystem::path& out_dir,
                                                  const std::string& run = "");

// From a kv_cache_policies policies.csv with several induction shares, for every model:
//   ablation_MODEL.{png,svg}: recall under razor@SHARE as a share of the full cache's, against
//     the share of heads kept whole, beside the paper's needle ablation (Qwen1.5-7B).
std::vector<std::filesystem::path> plot_ablation(const std::filesystem::path& policies_csv,
                                                 const std::filesystem::path& out_dir);

// From a kv_frontier frontier.csv, for every model: frontier_MODEL.{png,svg}, one panel
// per (task, measure): the measure against the share of the KV cache held (log axis), one
// line per method through its budgets, the full cache dashed, error bars of 1 SE.
std::vector<std::filesystem::path> plot_frontier(const std::filesystem::path& frontier_csv,
                                                 const std::filesystem::path& out_dir);

// From a train run's loss.csv and eval.csv: training.{png,svg}, the training loss per step
// and the held-out loss at each evaluation, with the unigram baseline dashed, titled
// `title` (training_title()).
std::vector<std::filesystem::path> plot_training(const std::filesystem::path& loss_csv,
                                                 const std::filesystem::path& eval_csv,
                                                 const std::filesystem::path& out_dir,
                                                 const std::string& title);
// "NAME: dim 128, 4 layers, 8/8 heads, context 1024, rope" and on a second line "trained
// on a, b", from a train run's config (as its manifest records it).
std::string training_title(const nlohmann::json& config);
// The same figure from a finished train run's directory (loss.csv, eval.csv and
// manifest.json beside `loss_csv`), for `kvscope plot training`.
std::vector<std::filesystem::path> plot_training_run(const std::filesystem::path& loss_csv,
                                                     const std::filesystem::path& out_dir);

// From a kv_head_finetune recovery.csv, for every (model, text, trainable):
//   recovery_MODEL__TEXT__TRAINABLE.{png,svg}: held-out perplexity (log scale) against
//     tokens trained, one panel per KV-head count, one curve per initialisation, the
//     fine-tuned original model dashed; each panel's y range includes that control.
std::vector<std::filesystem::path> plot_recovery(const std::filesystem::path& recovery_csv,
                                                 const std::filesystem::path& out_dir);

// "a/b c" -> "a_b_c": a name safe in file names.
std::string file_safe(const std::string& s);

}  // namespace kvscope
