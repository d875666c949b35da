// REPORT.md sections C1-C2: questions neither paper asks, on the model with induction heads.
#include <fmt/format.h>

#include <cmath>

#include "report_detail.hpp"

namespace kvscope::report_detail {

Section detector(const fs::path& root) {
  Section s{"C1", "The retrieval-head detector checked by ablation (not in the paper)",
            "not confirmed", ""};
  const Rows r = load(root / "paper_b_razor" / "policies.csv");
  const Rows passkey = load(root / "paper_b_razor" / "passkey.csv");
  const Rows copy = load(root / "paper_b_razor" / "copy.csv");
  if (!r.ok || !passkey.ok) return s.verdict = "not run", s.body = not_run("paper_b_razor"), s;
  s.body =
      "The probe's attention scores say which heads retrieve; an intervention can say it "
      "independently. `ablate_retrieval` masks the far context of the heads razor protects "
      "(they keep 4 sinks and the recent window) and leaves every other head whole; "
      "`ablate_random` does the same to as many of the other heads, drawn at random. Scored on "
      "B2's passkey grid and copy task.\n\n"
      "| model | measure | full | ablate selected heads | ablate other heads |\n"
      "|---|---|---|---|---|\n";
  int models = 0, confirmed = 0;
  for (const std::string& m : r.distinct("model")) {
    const auto at = [&](const Rows& detail, const char* policy, const char* measure) {
      return accuracy(r, detail, m, policy, measure);
    };
    const auto full = at(passkey, "full", "passkey_accuracy"),
               sel = at(passkey, "ablate_retrieval", "passkey_accuracy"),
               rnd = at(passkey, "ablate_random", "passkey_accuracy");
    if (!full || !sel || !rnd) continue;
    const auto heads = [&](const char* p) {
      const auto kept = r.num({{"model", m}, {"policy", p}}, "protected_heads");
      const auto total = r.num({{"model", m}, {"policy", p}}, "kv_heads");
      return kept && total ? fmt::format(" ({:.0f} heads)", *total - *kept) : std::string();
    };
    s.body += fmt::format("| {} | passkey_accuracy | {} | {}{} | {}{} |\n", m, pm(full), pm(sel),
                          heads("ablate_retrieval"), pm(rnd), heads("ablate_random"));
    if (copy.ok)
      s.body += fmt::format("| {} | copy_accuracy | {} | {} | {} |\n", m,
                            pm(at(copy, "full", "copy_accuracy")),
                            pm(at(copy, "ablate_retrieval", "copy_accuracy")),
                            pm(at(copy, "ablate_random", "copy_accuracy")));
    ++models;
    // Both gaps over 0.1 and over 2 unpaired standard errors.
    const auto clear = [](const Accuracy& a, const Accuracy& b) {
      return a.p - b.p > 0.1 && a.p - b.p > 2 * std::sqrt(a.se() * a.se() + b.se() * b.se());
    };
    confirmed += clear(*full, *sel) && clear(*rnd, *sel);
  }
  if (models > 0 && confirmed == models) s.verdict = "confirmed";
  s.body += fmt::format(
      "\n**{}.** On {} of {} models, masking the far context of the heads the probe selects "
      "costs the passkey over 0.1 more than masking as many other heads does{}.\n",
      s.verdict, confirmed, models,
      confirmed == models && models > 0
          ? ": the heads the attention scores pick are the ones retrieval runs through"
          : "");
  s.body +=
      "\n*Rule: confirmed when, on every model, passkey accuracy with the selected heads ablated "
      "is below both the full cache's and the other heads' ablation's by over 0.1 and over 2 "
      "standard errors (binomial over the passkeys, unpaired).*\n";
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
