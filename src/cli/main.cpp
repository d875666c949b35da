// kvscope: look inside the KV cache of real language models. Thin front end: parse the
// command line, dispatch, and turn every error into one line on stderr and exit code 1.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <new>
#include <map>
#include <string>

#include "commands.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/runtime/dist.hpp"

namespace {

int run_main(int argc, char** argv) {
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
  add("tokenize", "Print the token ids (or id and piece) a model's tokenizer gives a text",
      kvscope::cli::add_tokenize);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version print and exit 0 as CLI11 does; a usage error is a user error
    // like any other: one line, exit 1 (CLI11's own codes, 104-114, are not documented).
    if (e.get_exit_code() == int(CLI::ExitCodes::Success)) return app.exit(e);
    std::string sub;
    for (const CLI::App* s : app.get_subcommands()) sub = " " + s->get_name();
    std::fprintf(stderr, "kvscope: error: %s (see 'kvscope%s --help')\n", e.what(), sub.c_str());
    return 1;
  }
  std::string running;
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) {
        running = sub->get_name();
        KV_CHECK(kvscope::dist::size() == 1 || running == "run" || running == "dump",
                 "'kvscope {}' runs in one process; under mpirun (here {} ranks) only 'run' and "
                 "'dump' split their work across ranks",
                 running, kvscope::dist::size());
        return action();
      }
  } catch (const kvscope::Error& e) {
    std::fprintf(stderr, "kvscope: error: %s\n", e.what());
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    // Symlink loops, over-long names, permissions: say which path and why, without the
    // library's "filesystem error: ..." wrapping.
    std::string paths = e.path1().string();
    if (!e.path2().empty()) paths += ", " + e.path2().string();
    std::fprintf(stderr, "kvscope: error: %s: %s (while running 'kvscope %s')\n", paths.c_str(),
                 e.code().message().c_str(), running.c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "kvscope: error: out of memory while running 'kvscope %s' (an input asks for "
                 "more memory than this machine gives; check the sizes in the model, text and "
                 "config)\n",
                 running.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvscope: unexpected error while running 'kvscope %s': %s\n",
                 running.c_str(), e.what());
    return 1;
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  kvscope::dist::init(&argc, &argv);
  const int rc = run_main(argc, argv);
  if (rc != 0 && kvscope::dist::size() > 1) {
    // The other ranks may wait in a collective for this one: end them all, so that the
    // job fails as a whole and rank 0 never writes a result that looks finished.
    std::fprintf(stderr, "kvscope: rank %d of %d failed; ending every rank\n",
                 kvscope::dist::rank(), kvscope::dist::size());
    kvscope::dist::abort_job(rc);
  }
  kvscope::dist::finalize();
  return rc;
}
