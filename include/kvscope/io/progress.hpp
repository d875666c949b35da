// Progress of long commands: durations as M:SS, and one status line redrawn in place on
// stderr while it is a terminal (a log file or a pipe gets nothing from it, so captured
// output stays one line per event).
#pragma once

#include <chrono>
#include <string>

namespace kvscope {

// A duration for progress lines: "M:SS" (minutes uncapped; negative counts as 0).
std::string mmss(double seconds);

// "elapsed M:SS, ETA M:SS" after `done` of `total` units in `elapsed` seconds, assuming
// the remaining units take as long on average ("ETA ?" before the first one is done).
std::string elapsed_eta(double elapsed, double done, double total);

class StatusLine {
 public:
  // Enabled when stderr is a terminal and `wanted`.
  explicit StatusLine(bool wanted = true);
  ~StatusLine();  // finish()
  StatusLine(const StatusLine&) = delete;
  StatusLine& operator=(const StatusLine&) = delete;

  bool enabled() const { return enabled_; }
  // Redraws the line with `text` (at most 10 times a second unless `force`).
  void update(const std::string& text, bool force = false);
  // Ends the line (a newline when anything was drawn).
  void finish();

 private:
  bool enabled_ = false, drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace kvscope
