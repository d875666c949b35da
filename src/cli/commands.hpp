// Each kvscope subcommand registers its options on the CLI11 app and returns the
// function that runs it once parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope::cli {

using Action = std::function<int()>;

// A number >= `lo` (CLI11's NonNegativeNumber prints its range up to DBL_MAX): the message
// says "must be >= 0, got -1". Text that is no number is left to CLI11's conversion.
inline CLI::Validator at_least(double lo) {
  return CLI::Validator(
      [lo](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v) || v >= lo) return "";
        return "must be >= " + CLI::detail::to_string(lo) + ", got " + s;
      },
      ">= " + CLI::detail::to_string(lo));
}

// Writes to stdout; throws Error "writing to standard output failed: REASON" as soon as a
// write fails (a full disk, /dev/full, a closed stream), so a command stops instead of
// computing output nobody gets. main() checks the final flush the same way.
void write_stdout(std::string_view bytes);

// An error as one line whatever it quotes: a name from a file may hold a newline, a NUL
// (which would end the line for printf's %s) or a terminal control byte; those are written
// as C escapes.
std::string one_line(std::string_view s);

// --bos / --no-bos: whether the text's ids start with BOS, overriding the tokenizer's own
// rule (Tokenizer::sequence_bos; docs/experiments.md, "BOS"). `state`: -1 unset, 0, 1.
void add_bos_flags(CLI::App& app, int& state);
void apply_bos_flags(int state, Tokenizer& tok, const std::filesystem::path& tokenizer_path);

Action add_generate(CLI::App& app);
Action add_run(CLI::App& app);
Action add_dump(CLI::App& app);
Action add_plot(CLI::App& app);
Action add_tables(CLI::App& app);
Action add_tokenize(CLI::App& app);

}  // namespace kvscope::cli
