// Each kvscope subcommand registers its options on the CLI11 app and returns the
// function that runs it once parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string_view>

namespace kvscope::cli {

using Action = std::function<int()>;

// Writes to stdout; throws Error "writing to standard output failed: REASON" as soon as a
// write fails (a full disk, /dev/full, a closed stream), so a command stops instead of
// computing output nobody gets. main() checks the final flush the same way.
void write_stdout(std::string_view bytes);

Action add_generate(CLI::App& app);
Action add_run(CLI::App& app);
Action add_dump(CLI::App& app);
Action add_plot(CLI::App& app);
Action add_tables(CLI::App& app);
Action add_tokenize(CLI::App& app);

}  // namespace kvscope::cli
