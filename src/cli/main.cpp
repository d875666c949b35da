// kvscope: look inside the KV cache of real language models. Thin front end: parse the
// command line, dispatch, and turn every error into one line on stderr and exit code 1.
#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "commands.hpp"
#include "kvscope/io/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"kvscope: how much of the KV cache can go, and which part must stay?", "kvscope"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("kvscope ") + KVSCOPE_VERSION);
  std::map<CLI::App*, kvscope::cli::Action> actions;
  auto add = [&](const char* name, const char* what, auto adder) {
    CLI::App* sub = app.add_subcommand(name, what);
    actions[sub] = adder(*sub);
  };
  add("generate", "Continue a prompt with a model (greedy at temperature 0)",
      kvscope::cli::add_generate);
  add("run", "Run one experiment config and write results/NAME/", kvscope::cli::add_run);
  add("dump", "Dump K/V (and Q, attention output, logits) of every layer and head to HDF5",
      kvscope::cli::add_dump);
  add("plot", "Draw figures (PNG and SVG, through gnuplot) from result CSVs",
      kvscope::cli::add_plot);
  add("tables",
      "Run every config under configs/ whose results are out of date, then write "
      "results/REPORT.md",
      kvscope::cli::add_tables);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const kvscope::Error& e) {
    std::fprintf(stderr, "kvscope: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvscope: unexpected error: %s\n", e.what());
    return 1;
  }
  return 1;
}
