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

using Row = std::map<std::string, std::string>;

const std::vector<std::pair<std::string, std::string>> kFamilies = {
    {"eviction", "eviction"},
    {"quantization", "quantization"},
    {"low_rank", "low rank"},
    {"merged_heads", "merged heads"},
    {"composition", "composition"}};

std::string family_of(const Row& r) {
  return r.count("family") ? r.at("family") : "eviction";
}

bool better(const std::string& measure, double a, double b) {
  return lower_is_better(measure) ? a < b : a > b;
}

// Three decimals, or three significant digits for what three decimals would show as 0
// (a KL of 1e-4).
std::string num(double x) {
  return x == 0 || std::abs(x) >= 0.01 || !std::isfinite(x) ? fmt::format("{:.3f}", x)
                                                            : fmt::format("{:.2e}", x);
}
std::string signed_num(double x) {
  return (x >= 0 ? "+" : "") + num(x);
}

// "method@budget value (held; paired difference ± SE)" of a row.
std::string cell(const Row* r) {
  if (!r) return "-";
  const double b = std::stod(r->at("budget"));
  return fmt::format("{}{} {} ({:.3f}; {} ± {})", r->at("method"),
                     b < 1 ? fmt::format("@{:g}", b) : std::string(),
                     num(std::stod(r->at("value"))), std::stod(r->at("kv_share")),
                     signed_num(std::stod(r->at("delta"))), num(std::stod(r->at("delta_se"))));
}

// level -> family -> the methods that won a measure (one entry per measure)
using Wins = std::map<double, std::map<std::string, std::vector<std::string>>>;

// One table row: at held <= level, the best method for (task, measure) overall and per
// family; "" when no method or no full-cache value is there. Records the winner in wins.
std::string budget_row(const Rows& r, const std::string& model, double level,
                       const std::string& task, const std::string& measure, Wins& wins) {
  const Row* best = nullptr;
  std::map<std::string, const Row*> fam;
  for (const auto* row : r.select({{"model", model}, {"task", task}, {"measure", measure}})) {
    const double v = std::stod(row->at("value")), held = std::stod(row->at("kv_share"));
    if (row->at("method") == "full" || !std::isfinite(v) || !std::isfinite(held) ||
        held > level + 1e-9)
      continue;
    const Row*& f = fam[family_of(*row)];
    if (!f || better(measure, v, std::stod(f->at("value")))) f = row;
    if (!best || better(measure, v, std::stod(best->at("value")))) best = row;
  }
  const auto full =
      r.num({{"model", model}, {"method", "full"}, {"task", task}, {"measure", measure}}, "value");
  if (!best || !full) return "";
  wins[level][family_of(*best)].push_back(best->at("method"));
  const double d = std::stod(best->at("delta")), dse = std::stod(best->at("delta_se"));
  std::string line =
      fmt::format("| {:g} | {} | {} | {} | {} | {:.3f} | {} ± {} | {} | {} ± {} | {} |", level,
                  task, measure, best->at("method"), family_of(*best),
                  std::stod(best->at("kv_share")), num(std::stod(best->at("value"))),
                  num(std::stod(best->at("se"))), num(*full), signed_num(d), num(dse),
                  std::abs(d) <= 2 * dse                ? "yes"
                  : (d < 0) == lower_is_better(measure) ? "no: better"
                                                        : "no: worse");
  for (const auto& [f, name] : kFamilies)
    line += " " + cell(fam.count(f) ? fam.at(f) : nullptr) + " |";
  return line + "\n";
}

// From the numbers: which family wins most measures at each budget.
std::string wins_summary(const Wins& wins) {
  std::string body;
  for (auto it = wins.rbegin(); it != wins.rend(); ++it) {
    std::vector<std::string> parts;
    size_t total = 0;
    for (const auto& [f, methods] : it->second) {
      std::vector<std::string> distinct;
      for (const std::string& m : methods)
        if (std::find(distinct.begin(), distinct.end(), m) == distinct.end()) distinct.push_back(m);
      parts.push_back(fmt::format("{} {} ({})", f, methods.size(), fmt::join(distinct, ", ")));
      total += methods.size();
    }
    body += fmt::format("- held <= {:g}: the best method's family, of {} measures: {}.\n",
                        it->first, total, fmt::join(parts, "; "));
  }
  return body;
}

// The methods a budget put out of reach, and why.
std::string out_of_reach(const Rows& r, const Rows& out, const std::string& model) {
  std::vector<std::string> unreachable;
  const auto add = [&](const std::string& u) {
    if (std::find(unreachable.begin(), unreachable.end(), u) == unreachable.end())
      unreachable.push_back(u);
  };
  for (const auto* row : r.select({{"model", model}}))
    if (!std::isfinite(std::stod(row->at("value"))))
      add(fmt::format("{} at {:g} (protected heads exceed the budget)", row->at("method"),
                      std::stod(row->at("budget"))));
  for (const auto* row : out.select({{"model", model}}))
    add(fmt::format("{} at {:g} ({})", row->at("method"), std::stod(row->at("budget")),
                    row->at("reason")));
  return unreachable.empty() ? ""
                             : fmt::format("\nOut of reach: {}.\n", fmt::join(unreachable, "; "));
}

// One model of one run: its table, the families' wins, what was out of reach, the plots.
std::string model_section(const fs::path& root, const std::string& run, const Rows& r,
                          const Rows& out, const std::string& model) {
  std::string body = fmt::format(
      "\n### {} ({})\n\n| held <= | task | measure | best | family | held | value | full "
      "| best - full | within noise |",
      model, run);
  for (const auto& [f, name] : kFamilies) body += fmt::format(" best {} |", name);
  body += "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::vector<double> levels;
  for (const auto* row : r.select({{"model", model}})) {
    const double b = std::stod(row->at("budget"));
    if (row->at("method") != "full" && b < 1 &&
        std::find(levels.begin(), levels.end(), b) == levels.end())
      levels.push_back(b);
  }
  std::sort(levels.rbegin(), levels.rend());
  std::vector<std::pair<std::string, std::string>> measures;
  for (const auto* row : r.select({{"model", model}, {"method", "full"}}))
    if (row->at("measure") != "nll") measures.push_back({row->at("task"), row->at("measure")});
  Wins wins;
  for (double level : levels)
    for (const auto& [task, measure] : measures)
      body += budget_row(r, model, level, task, measure, wins);
  body += "\n" + wins_summary(wins);
  body += out_of_reach(r, out, model);
  return body + plots(root, run, "frontier_" + model);
}

}  // namespace

Section frontier(const fs::path& root) {
  Section s{"D1",
            "Which part must stay: eviction, quantization, low rank and merged heads on one "
            "bytes axis (neither paper)",
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
      "Each method of `kv_frontier` (docs/experiments.md) shrinks the cache its own way: "
      "eviction keeps a share of the slots (after the prefill and after every decoded token), "
      "quantization stores fewer bits, low rank holds latents or fewer key channels, merged "
      "heads hold fewer KV heads. `held` is the peak bytes a real implementation holds (K and "
      "V at 16 bits per element as computed, or their stored form with every scale, zero "
      "point, outlier and full-precision residual token, plus an eviction method's own state "
      "while decoding) as a share of the full cache's peak; low-rank bases are counted "
      "apart (`side_bytes`). At each bytes budget (held <= the budget): the best method "
      "overall by the measure (lower perplexity and KL, higher accuracy and top-1 "
      "agreement), its value ± SE over items, the full cache's, the paired difference (the "
      "same windows, passkeys and questions) ± its SE, whether the best is within noise of "
      "the full cache (|difference| <= 2 SE; else better or worse: a model that degrades on "
      "contexts longer than it was trained on can gain by forgetting), and the best of each "
      "family as `method@budget value (held; difference from the full cache ± SE)`.\n";
  for (const std::string& run : runs) {
    const Rows r = load(root / run / "frontier.csv");
    const Rows out =
        fs::exists(root / run / "unreachable.csv") ? load(root / run / "unreachable.csv") : Rows{};
    for (const std::string& model : r.distinct("model"))
      s.body += model_section(root, run, r, out, model);
  }
  s.body +=
      "\nNot a paper table: neither paper compares these methods on one axis. The frontier "
      "per method is in each run's `frontier.csv` and figure.\n";
  return s;
}

}  // namespace kvscope::report_detail
