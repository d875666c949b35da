// REPORT.md sections A1-A5: low-rank KV heads (Yu et al. 2024).
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "report_detail.hpp"

namespace kvscope::report_detail {

Section energy(const fs::path& root) {
  Section s{"A1", "Fig. 1: energy of the top singular values of K and V", kDiffers, ""};
  const Rows r = load_all(
      root, {"paper_a_energy", "paper_a_energy_mha", "paper_a_energy_induction"}, "summary.csv");
  if (!r.ok) return s.verdict = "not run", s.body = not_run("paper_a_energy"), s;
  s.body =
      "Paper (LLaMA2-7B, C4): keys and values are low-rank; the top 25% of singular values "
      "hold most of the energy in most layers (keys more than values).\n\n"
      "| model | calibration | K before RoPE | K after RoPE | V |\n|---|---|---|---|---|\n";
  double min_k = 1, min_v = 1, max_v = 0;
  for (const std::string& m : r.distinct("model"))
    for (const std::string& cal : r.distinct("calibration")) {
      std::map<std::string, double> mean;
      for (const char* t : {"k_pre_rope", "k", "v"}) {
        const auto rows =
            r.select({{"model", m}, {"calibration", cal}, {"tensor", t}, {"scope", "layer"}});
        double sum = 0;
        for (const auto* row : rows) sum += std::stod(row->at("top25_energy"));
        mean[t] = rows.empty() ? NAN : sum / double(rows.size());
      }
      if (std::isnan(mean["k"])) continue;
      min_k = std::min(min_k, mean["k"]);
      min_v = std::min(min_v, mean["v"]), max_v = std::max(max_v, mean["v"]);
      s.body += fmt::format("| {} | {} | {:.3f} | {:.3f} | {:.3f} |\n", m, cal, mean["k_pre_rope"],
                            mean["k"], mean["v"]);
    }
  s.body +=
      "\n(share of energy in the top 25% of singular values, mean over layers, layer "
      "scope)\n\n";
  if (min_k > 0.5 && min_v > 0.5) s.verdict = kReproduced;
  s.body += fmt::format(
      "**{}.** On every model and text the top 25% of singular values hold at least {:.2f} of "
      "the post-RoPE key energy but only {:.2f}-{:.2f} of the value energy: keys are low-rank "
      "as the paper says, values less so; with 32-64-wide caches the counts are small, so "
      "this is the shape of the claim, not its numbers.\n",
      s.verdict, min_k, min_v, max_v);
  s.body +=
      "\n*Rule: reproduced when, on every model and text, the top 25% of singular values hold more "
      "than half the energy of both K after RoPE and V.*\n";
  s.body += plots(root, "paper_a_energy", "energy_");
  s.body += plots(root, "paper_a_energy_mha", "energy_");
  s.body += plots(root, "paper_a_energy_induction", "energy_");
  return s;
}

// Paper A, Table 4 (before training).
const double kPaperOriginal = 5.47;
const std::map<int, std::array<double, 3>> kPaperTable4 = {  // KV heads of 32 -> init ppl
    {16, {1079.43, 807.62, 13.57}},
    {8, {4113.79, 3888.63, 194.61}}};

Section table4(const fs::path& root) {
  Section s{"A2", "Table 4: perplexity after MHA -> GQA initialisation", kDiffers, ""};
  const Rows r = load_all(
      root, {"paper_a_table4", "paper_a_table4_mha", "paper_a_table4_induction"}, "reduction.csv");
  if (!r.ok) return s.verdict = "not run", s.body = not_run("paper_a_table4"), s;
  s.body =
      "| model | KV heads | original | mean-pool | SVD-w | SVD-a |\n|---|---|---|---|---|---|\n";
  for (const auto& [heads, v] : kPaperTable4)
    s.body +=
        fmt::format("| *paper: LLaMA2-7B, WikiText-2* | *32 -> {}* | *{}* | *{}* | *{}* | *{}* |\n",
                    heads, kPaperOriginal, v[0], v[1], v[2]);
  int cases = 0, ordered = 0;
  double worst_gap = 1e30, best_gap = 0;
  std::string best_case;
  for (const std::string& m : r.distinct("model")) {
    const auto orig = r.num({{"model", m}, {"method", "original"}}, "perplexity");
    const auto from = r.select({{"model", m}, {"method", "original"}});
    const std::string n0 = from.empty() ? "?" : from[0]->at("kv_heads");
    for (const std::string& h : r.distinct("kv_heads")) {
      if (h == n0) continue;
      const auto mp = r.num({{"model", m}, {"method", "mean_pool"}, {"kv_heads", h}}, "perplexity");
      const auto sw = r.num({{"model", m}, {"method", "svd_w"}, {"kv_heads", h}}, "perplexity");
      const auto sa = r.num({{"model", m}, {"method", "svd_a"}, {"kv_heads", h}}, "perplexity");
      if (!mp || !sa) continue;
      s.body += fmt::format("| {} | {} -> {} | {} | {} | {} | {} |\n", m, n0, h, f(orig), f(mp),
                            f(sw), f(sa));
      ++cases;
      ordered += *sa < *mp && (!sw || *sa < *sw);
      worst_gap = std::min(worst_gap, *mp / *sa);
      if (*mp / *sa > best_gap) best_gap = *mp / *sa, best_case = fmt::format("{} at {}", m, h);
    }
  }
  if (cases > 0 && ordered == cases) s.verdict = kReproduced;
  s.body += fmt::format(
      "\n**{}.** SVD-a beats mean-pooling and SVD-w in {} of {} model x target cases, with "
      "{:.1f}x to {:.1f}x lower perplexity than mean-pooling (the largest: {} KV heads; the "
      "paper: 80x at 16 of 32 heads, 21x at 8). The gap grows with the heads merged per group "
      "and with the heads' width; the multi-head models kvscope trained (austen_*) show it best.\n",
      s.verdict, ordered, cases, worst_gap, best_gap, best_case);
  s.body +=
      "\n*Rule: reproduced when SVD-a has the lowest perplexity of the three initialisations in "
      "every model x target case.*\n";
  s.body += plots(root, "paper_a_table4", "reduction_");
  s.body += plots(root, "paper_a_table4_mha", "reduction_");
  s.body += plots(root, "paper_a_table4_induction", "reduction_");
  return s;
}

// Paper A, Table 4's last column: SVD-a initialisation, then training (LoRA).
const std::map<int, std::array<double, 2>> kPaperAfter = {  // KV heads -> {init, trained}
    {16, {13.57, 7.08}},
    {8, {194.61, 9.17}}};

Section after_training(const fs::path& root) {
  Section s{"A3", "Table 4: perplexity after fine-tuning the converted model", kDiffers, ""};
  const Rows r = load(root / "paper_a_finetune" / "after_training.csv");
  if (!r.ok) return s.verdict = "not run", s.body = not_run("paper_a_finetune"), s;
  s.body =
      "Each cell: perplexity at initialisation -> after fine-tuning (same batches for every "
      "run). `original` is the control: the unreduced model fine-tuned the same way.\n\n"
      "| model | KV heads | trained | original | mean-pool | SVD-w | SVD-a | SVD-a / control "
      "| gap closed |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& [heads, v] : kPaperAfter)
    s.body += fmt::format(
        "| *paper: LLaMA2-7B, WikiText-2* | *32 -> {}* | *LoRA* | *{}* | | | *{} -> {}* | "
        "*{:.2f}x* | *{:.0f}%* |\n",
        heads, kPaperOriginal, v[0], v[1], v[1] / kPaperOriginal,
        100 * (1 - std::log(v[1] / kPaperOriginal) / std::log(v[0] / kPaperOriginal)));
  // Share of SVD-a's log-perplexity gap closed by fine-tuning: the gap before is to the
  // original as shipped, the gap after to the control fine-tuned the same way.
  // The verdict: SVD-a after fine-tuning against the control fine-tuned the same way, by
  // the paper's own ratio (7.08 / 5.47 = 1.29 at 16 of 32 heads). The share of the gap
  // closed is shown too, but not judged: with a gap of a few percent at initialisation
  // (the ALiBi model) it is a ratio of two small logs.
  const double kPaperRatio = 7.08 / kPaperOriginal;
  int cases = 0, close = 0, beats_pool = 0;
  double lo = 1e30, hi = -1e30;
  for (const std::string& m : r.distinct("model"))
    for (const std::string& tr : r.distinct("trainable")) {
      const auto orig = r.select({{"model", m}, {"method", "original"}, {"trainable", tr}});
      for (const std::string& h : r.distinct("kv_heads")) {
        const auto cell =
            [&](const char* meth) -> std::pair<std::optional<double>, std::optional<double>> {
          const std::map<std::string, std::string> w = {
              {"model", m}, {"method", meth}, {"kv_heads", h}, {"trainable", tr}};
          return {r.num(w, "perplexity_init"), r.num(w, "perplexity_trained")};
        };
        const auto sa = cell("svd_a");
        if (!sa.first || orig.empty()) continue;
        const auto cs = [&](const char* meth) {
          const auto c = cell(meth);
          return c.first ? fmt::format("{} -> {}", f(c.first), f(c.second)) : std::string("-");
        };
        const double o0 = std::stod(orig[0]->at("perplexity_init"));
        const double o1 = std::stod(orig[0]->at("perplexity_trained"));
        const double share = 1 - std::log(*sa.second / o1) / std::log(*sa.first / o0);
        const double ratio = *sa.second / o1;
        s.body +=
            fmt::format("| {} | {} -> {} | {} | {} -> {} | {} | {} | {} | {:.2f}x | {:.0f}% |\n", m,
                        orig[0]->at("kv_heads"), h, tr, f(o0), f(o1), cs("mean_pool"), cs("svd_w"),
                        cs("svd_a"), ratio, 100 * share);
        if (tr != "all") continue;
        ++cases;
        close += ratio <= kPaperRatio;
        const auto mp = cell("mean_pool");
        beats_pool += mp.second && *sa.second < *mp.second;
        lo = std::min(lo, ratio), hi = std::max(hi, ratio);
      }
    }
  if (cases > 0 && close == cases) s.verdict = kReproduced;
  s.body += fmt::format(
      "\n**{}.** After fine-tuning all weights, SVD-a ends {:.2f}-{:.2f}x the fine-tuned "
      "control's perplexity ({} of {} cases within the paper's {:.2f}x; the paper: 1.29x at 16 "
      "KV heads, 1.68x at 8, with LoRA on 7B), and below mean-pooling after the same training "
      "in {} of {} cases. Here the fine-tuning is full and short (see "
      "configs/paper_a_finetune.yaml).\n",
      s.verdict, lo, hi, close, cases, kPaperRatio, beats_pool, cases);
  s.body += fmt::format(
      "\n*Rule: reproduced when, in every model x target case with all weights trained, SVD-a "
      "after fine-tuning is within {:.2f}x (the paper's 7.08 / 5.47) of the original model "
      "fine-tuned the same way. The last column, 1 - log(trained / control trained) / "
      "log(init / original), is the share of the log-perplexity gap closed.*\n",
      kPaperRatio);
  s.body += plots(root, "paper_a_finetune", "recovery_");
  return s;
}

Section calibration(const fs::path& root) {
  Section s{"A4", "Calibration-data size (SVD-a init)", kDiffers, ""};
  const Rows r = load(root / "paper_a_calibration" / "reduction.csv");
  if (!r.ok) return s.verdict = "not run", s.body = not_run("paper_a_calibration"), s;
  s.body =
      "Paper: 23k -> 232k calibration samples, 13.57 -> 13.92 (no gain).\n\n"
      "| model | KV heads | tokens | SVD-a perplexity |\n|---|---|---|---|\n";
  double best_gain = -1e30, spread = 0;  // gain: 1 - ppl(most tokens) / ppl(fewest)
  for (const std::string& m : r.distinct("model"))
    for (const std::string& h : r.distinct("kv_heads")) {
      const auto rows = r.select({{"model", m}, {"method", "svd_a"}, {"kv_heads", h}});
      if (rows.empty()) continue;
      double lo = 1e30, hi = 0, few = 0, most = 0;
      int64_t t_few = INT64_MAX, t_most = -1;
      for (const auto* row : rows) {
        const double p = std::stod(row->at("perplexity"));
        const int64_t t = std::stoll(row->at("calibration_tokens"));
        lo = std::min(lo, p), hi = std::max(hi, p);
        if (t < t_few) t_few = t, few = p;
        if (t > t_most) t_most = t, most = p;
        s.body += fmt::format("| {} | {} | {} | {:.2f} |\n", m, h, t, p);
      }
      best_gain = std::max(best_gain, 1 - most / few);
      spread = std::max(spread, hi / lo - 1);
    }
  // Rule: reproduced when the most calibration data never improves perplexity by 10% or more.
  if (best_gain < 0.10) s.verdict = kReproduced;
  s.body += fmt::format(
      "\n**{}.** {} (the best gain from the most over the fewest tokens is {:.0f}%; values "
      "spread by up to {:.0f}% per model and target).\n",
      s.verdict,
      best_gain < 0.10
          ? "More calibration data does not buy a better initialisation, as in the paper"
          : "More calibration data does improve the initialisation here, unlike in the paper",
      100 * best_gain, 100 * spread);
  s.body +=
      "\n*Rule: reproduced when the most calibration tokens never improve SVD-a's perplexity by "
      "10% or more over the fewest.*\n";
  return s;
}

Section decode_speed(const fs::path& root) {
  Section s{"A5", "Decode speed with fewer KV heads", kDiffers, ""};
  const Rows r =
      load_all(root, {"paper_a_table4", "paper_a_table4_mha", "paper_a_table4_induction"},
               "timing_decode.csv");
  if (!r.ok) return s.verdict = "not run", s.body = not_run("paper_a_table4"), s;
  double sum = 0, lo = 1e30, hi = 0;
  for (const auto& row : r.rows) {
    const double x =
        std::stod(row.at("tokens_per_second")) / std::stod(row.at("original_tokens_per_second"));
    sum += x, lo = std::min(lo, x), hi = std::max(hi, x);
  }
  const double mean = r.rows.empty() ? 0 : sum / double(r.rows.size());
  // Rule: reproduced when reduced models decode at least 1.2x faster on average.
  if (mean >= 1.2) s.verdict = kReproduced;
  s.body = fmt::format(
      "Paper (A100, 2048-token context): LLaMA2-7B 8.05 tok/s with 32 KV heads, 13.41 with 16, "
      "20.81 with 8.\n\n**{}.** Reduced models decode at {:.2f}x the original's rate on average "
      "({:.2f}-{:.2f}x; `timing_decode.csv`, which varies run to run). {}\n",
      s.verdict, mean, lo, hi,
      mean >= 1.2 ? "Fewer KV heads mean fewer cache bytes read per token, as in the paper."
                  : "With caches of a few hundred kilobytes, decode time is per-call overhead, "
                    "not cache reads, so fewer KV heads do not make decoding faster.");
  s.body +=
      "\n*Rule: reproduced when reduced models decode at least 1.2x faster than the original on "
      "average.*\n";
  return s;
}

}  // namespace kvscope::report_detail
