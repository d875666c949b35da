#include "kvscope/io/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace kvscope {

std::string mmss(double seconds) {
  const int t = int(std::max(0.0, seconds) + 0.5);
  return fmt::format("{}:{:02d}", t / 60, t % 60);
}

std::string elapsed_eta(double elapsed, double done, double total) {
  if (done <= 0) return fmt::format("elapsed {}, ETA ?", mmss(elapsed));
  return fmt::format("elapsed {}, ETA {}", mmss(elapsed),
                     mmss(elapsed / done * std::max(0.0, total - done)));
}

StatusLine::StatusLine(bool wanted) : enabled_(wanted && ::isatty(STDERR_FILENO) != 0) {}

StatusLine::~StatusLine() {
  finish();
}

void StatusLine::update(const std::string& text, bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  // \r back to the start, the text, then clear what a longer previous line left.
  std::fprintf(stderr, "\r%s\033[K", text.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void StatusLine::finish() {
  if (drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace kvscope
