// REPORT.md sections C1-C2: questions neither paper asks, on the model with induction heads.
#include <fmt/format.h>

#include <cmath>

#include "report_detail.hpp"

namespace kvscope::report_detail {

Section detector(const fs::path& root) {
  Section s{"C1", "The retrieval-head detector checked by ablation (not in the paper)",
            "not confirmed", ""};
  const Rows r = load(root / "paper_b_razor" / "policies.csv");
  const Rows p = load(root / "paper_b_razor" / "paired.csv");
  if (!r.ok || !p.ok) return s.verdict = "not run", s.body = not_run("paper_b_razor"), s;
  s.body =
      "The probe's attention scores say which heads retrieve; an intervention can say it "
      "independently. `ablate_retrieval` masks the far context of the heads razor protects "
      "(they keep 4 sinks and the recent window) and leaves every other head whole; "
      "`ablate_random` does the same to as many of the other heads, drawn at random (each draw "
      "a row of `policies.csv`, `ablate_random#k`). Differences are paired against "
      "`ablate_retrieval` on the same items.\n\n"
      "| model | task | full | ablate selected heads | full - selected | other heads - selected: "
      "mean (min-max over draws) |\n|---|---|---|---|---|---|\n";
  int models = 0, confirmed = 0;
  for (const std::string& m : r.distinct("model")) {
    const std::vector<std::string> draws = draws_of(r, m, "ablate_random");
    bool judged = false, ok = false;
    for (const std::string& task : needle_tasks(p, m)) {
      const auto full = paired(p, m, task, "ablate_retrieval", "full");
      if (!full || draws.empty()) continue;
      std::vector<Paired> dv;
      for (const std::string& d : draws)
        if (const auto x = paired(p, m, task, "ablate_retrieval", d)) dv.push_back(*x);
      if (dv.empty()) continue;
      double mean = 0, lo = 1e30, hi = -1e30;
      bool each_clear = true;
      for (const Paired& x : dv) {
        mean += x.diff / double(dv.size());
        lo = std::min(lo, x.diff), hi = std::max(hi, x.diff);
        each_clear &= x.diff > 0.1 && x.diff > 2 * x.se;
      }
      s.body += fmt::format(
          "| {} | {} | {:.3f} | {:.3f} | {} | {:+.3f} ({:+.3f} to {:+.3f}, {} "
          "draws) |\n",
          m, task, full->policy, full->reference, signed_pm(*full), mean, lo, hi, dv.size());
      if (task == "passkey") {
        judged = true;
        ok = full->diff > 0.1 && full->diff > 2 * full->se && each_clear;
      }
    }
    if (!judged) continue;
    ++models;
    confirmed += ok;
  }
  if (models > 0 && confirmed == models) s.verdict = "confirmed";
  s.body += fmt::format(
      "\n**{}.** On {} of {} models, masking the far context of the heads the probe selects "
      "costs the passkey over 0.1 more than the full cache and than masking as many other heads, "
      "in every draw{}.\n",
      s.verdict, confirmed, models,
      confirmed == models && models > 0
          ? ": the heads the attention scores pick are the ones retrieval runs through"
          : "");
  s.body +=
      "\n*Rule: confirmed when, on every model, passkey accuracy with the selected heads ablated "
      "is below the full cache's and below every random draw's by over 0.1 and over 2 paired "
      "standard errors.*\n";
  return s;
}

Section reduction_circuit(const fs::path& root) {
  Section s{"C2", "Does an MHA -> GQA reduction keep the induction circuit? (neither paper)",
            kNotApplicable, ""};
  const Rows r = load(root / "paper_a_table4_induction" / "induction.csv");
  if (!r.ok) return s.verdict = "not run", s.body = not_run("paper_a_table4_induction"), s;
  s.body =
      "The retrieval probe and its copy loss (`induction.csv` of paper_a_table4_induction) on "
      "each reduced model, without fine-tuning, for the models whose original copies (copy "
      "drop over 50%): induction = best KV-head induction score / uniform level; copy drop = 1 - "
      "NLL of copies 2-4 / NLL of copy 1 of a random block.\n\n"
      "| model | method | KV heads | induction | copy drop |\n|---|---|---|---|---|\n";
  int shown = 0;
  std::string best_note;
  for (const std::string& m : r.distinct("model")) {
    const auto orig = r.num({{"model", m}, {"method", "original"}}, "copy_drop");
    if (!orig || *orig < 0.5) continue;
    for (const auto* row : r.select({{"model", m}})) {
      s.body += fmt::format("| {} | {} | {} | {:.1f}x | {:.0f}% |\n", m, row->at("method"),
                            row->at("kv_heads"), std::stod(row->at("induction_ratio")),
                            100 * std::stod(row->at("copy_drop")));
      ++shown;
    }
  }
  if (shown == 0) s.body += "| (no model copies) | | | | |\n";
  s.body +=
      "\nNot a paper table: neither paper asks whether a KV-head reduction keeps the circuit "
      "retrieval heads are made of. A method keeps it when its copy drop stays near the "
      "original's.\n";
  return s;
}

}  // namespace kvscope::report_detail
