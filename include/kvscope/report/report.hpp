// results/REPORT.md: every table of both papers (numbers from ../shared/design/PAPERS.md,
// copied into report.cpp) next to kvscope's on the shipped models, with the plots, and a
// verdict per table -- reproduced in kind, differs, or not applicable here -- that is
// computed from the CSVs, not written by hand, so it cannot go stale when results change.
#pragma once

#include <filesystem>
#include <string>

namespace kvscope {

// The report's Markdown for the results under `results_root` (missing experiments are
// reported as not run). Image links are relative to results_root.
std::string make_report(const std::filesystem::path& results_root);

// make_report written atomically to results_root/REPORT.md.
void write_report(const std::filesystem::path& results_root);

}  // namespace kvscope
