// What the plot files share: the two formats every figure is written in.
#pragma once

namespace kvscope::plot_detail {

// {extension, gnuplot terminal line}, for a figure of the given pixel size.
inline const char* const kTerminals[2][2] = {
    {"png", "set terminal pngcairo noenhanced size 1500,470 font 'sans,11' linewidth 1.5"},
    {"svg",
     "set terminal svg noenhanced size 1500,470 font 'sans,11' linewidth 1.5 background "
     "'#ffffff'"}};

}  // namespace kvscope::plot_detail

#include <fmt/format.h>

#include <string>

namespace kvscope::plot_detail {

// The terminal line for `ext` ("png" or "svg") at a custom size.
inline std::string terminal(const std::string& ext, int width, int height) {
  return ext == "png" ? fmt::format("set terminal pngcairo noenhanced size {},{} font 'sans,11'",
                                    width, height)
                      : fmt::format(
                            "set terminal svg noenhanced size {},{} font 'sans,11' background "
                            "'#ffffff'",
                            width, height);
}

}  // namespace kvscope::plot_detail
