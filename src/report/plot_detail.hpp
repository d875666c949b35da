// What the plot files share: the formats every figure is written in, and axis helpers.
#pragma once

#include <fmt/format.h>

#include <string>

namespace kvscope::plot_detail {

// {extension, gnuplot terminal line}, for a figure of the given pixel size.
inline const char* const kTerminals[2][2] = {
    {"png", "set terminal pngcairo noenhanced size 1500,470 font 'sans,11' linewidth 1.5"},
    {"svg",
     "set terminal svg noenhanced size 1500,470 font 'sans,11' linewidth 1.5 background "
     "'#ffffff'"}};

// The terminal line for `ext` ("png" or "svg") at a custom size.
inline std::string terminal(const std::string& ext, int width, int height) {
  return ext == "png" ? fmt::format("set terminal pngcairo noenhanced size {},{} font 'sans,11'",
                                    width, height)
                      : fmt::format(
                            "set terminal svg noenhanced size {},{} font 'sans,11' background "
                            "'#ffffff'",
                            width, height);
}

// `s` inside a single-quoted gnuplot string ('' is a quote there).
inline std::string gnuplot_quote(const std::string& s) {
  std::string out;
  for (const char ch : s) out += ch == '\'' ? std::string("''") : std::string(1, ch);
  return out;
}

// "set yrange [lo:hi]" for a log-scale axis that shows every value in [lo, hi] with a
// margin of a quarter of a decade on each side (so a reference line at the edge of the
// data, such as the original model's perplexity, is drawn inside the frame).
inline std::string log_yrange(double lo, double hi) {
  const double margin = 1.7782794100389228;  // 10^(1/4)
  return fmt::format("set yrange [{:.6g}:{:.6g}]\n", lo / margin, hi * margin);
}

}  // namespace kvscope::plot_detail
