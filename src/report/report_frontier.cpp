// REPORT.md section D1: which part of the KV cache must stay, from every kv_frontier run.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>

#include "report_detail.hpp"

namespace kvscope::report_detail {

namespace {

bool lower_is_better(const std::string& measure) {
  return measure == "perplexity" || measure == "kl" || measure == "nll";
}

}  // namespace

Section frontier(const fs::path& root) {
  Section s{"D1", "Which part must stay: every eviction method on one bytes axis (neither paper)",
            kNotApplicable, ""};
  std::vector<std::string> runs;
  if (fs::exists(root))
    for (const auto& e : fs::directory_iterator(root))
      if (e.path().filename().string().rfind("kv_frontier", 0) == 0 &&
          fs::exists(e.path() / "frontier.csv"))
        runs.push_back(e.path().filename().string());
  std::sort(runs.begin(), runs.end());
  if (runs.empty()) return s.verdict = "not run", s.body = not_run("kv_frontier_austen"), s;
  s.body =
      "Each method of `kv_frontier` (docs/experiments.md) keeps the cache within a share of the "
      "full cache's slots after the prefill and after every decoded token; `held` is the peak "
      "K/V bytes (16-bit elements) plus the method's own state while decoding, as a share of "
      "the full cache's peak. At each budget: the best method by the measure (lower perplexity "
      "and KL, higher accuracy and top-1 agreement), its value ± SE over items, the full "
      "cache's, the paired difference (the same windows, passkeys and questions) ± its SE, and "
      "whether the best stays within noise of the full cache (|difference| <= 2 SE; else "
      "better or worse than it: a model that degrades on contexts longer than it was trained "
      "on can gain by forgetting).\n";
  for (const std::string& run : runs) {
    const Rows r = load(root / run / "frontier.csv");
    for (const std::string& model : r.distinct("model")) {
      s.body += fmt::format(
          "\n### {} ({})\n\n| budget | task | measure | best | held | value | full | best - full "
          "| within noise |\n|---|---|---|---|---|---|---|---|---|\n",
          model, run);
      std::vector<std::string> budgets;
      for (const auto* row : r.select({{"model", model}}))
        if (row->at("method") != "full" &&
            std::find(budgets.begin(), budgets.end(), row->at("budget")) == budgets.end())
          budgets.push_back(row->at("budget"));
      std::vector<std::pair<std::string, std::string>> measures;
      for (const auto* row : r.select({{"model", model}, {"method", "full"}}))
        if (row->at("measure") != "nll") measures.push_back({row->at("task"), row->at("measure")});
      std::vector<std::string> unreachable;
      for (const std::string& b : budgets)
        for (const auto& [task, measure] : measures) {
          const bool low = lower_is_better(measure);
          const std::map<std::string, std::string>* best = nullptr;
          for (const auto* row :
               r.select({{"model", model}, {"budget", b}, {"task", task}, {"measure", measure}})) {
            const double v = std::stod(row->at("value"));
            if (!std::isfinite(v)) {
              const std::string u = fmt::format("{} at {:g}", row->at("method"), std::stod(b));
              if (std::find(unreachable.begin(), unreachable.end(), u) == unreachable.end())
                unreachable.push_back(u);
              continue;
            }
            if (!best ||
                (low ? v < std::stod(best->at("value")) : v > std::stod(best->at("value"))))
              best = row;
          }
          const auto full =
              r.num({{"model", model}, {"method", "full"}, {"task", task}, {"measure", measure}},
                    "value");
          if (!best || !full) continue;
          const double d = std::stod(best->at("delta")), dse = std::stod(best->at("delta_se"));
          s.body += fmt::format(
              "| {:g} | {} | {} | {} | {:.3f} | {:.3f} ± {:.3f} | {:.3f} | "
              "{:+.3f} ± {:.3f} | {} |\n",
              std::stod(b), task, measure, best->at("method"), std::stod(best->at("kv_share")),
              std::stod(best->at("value")), std::stod(best->at("se")), *full, d, dse,
              std::abs(d) <= 2 * dse                ? "yes"
              : (d < 0) == lower_is_better(measure) ? "no: better"
                                                    : "no: worse");
        }
      if (!unreachable.empty())
        s.body += fmt::format(
            "\nOut of reach (its protected heads alone hold more than the budget): {}.\n",
            fmt::join(unreachable, ", "));
      s.body += plots(root, run, "frontier_" + model);
    }
  }
  s.body +=
      "\nNot a paper table: neither paper compares these methods on one axis. The frontier "
      "per method is in each run's `frontier.csv` and figure.\n";
  return s;
}

}  // namespace kvscope::report_detail
