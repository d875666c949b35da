// Each kvscope subcommand registers its options on the CLI11 app and returns the
// function that runs it once parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace kvscope::cli {

using Action = std::function<int()>;

Action add_generate(CLI::App& app);
Action add_run(CLI::App& app);
Action add_dump(CLI::App& app);
Action add_plot(CLI::App& app);
Action add_tables(CLI::App& app);
Action add_tokenize(CLI::App& app);

}  // namespace kvscope::cli
