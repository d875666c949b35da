// kvscope: look inside the KV cache of real language models. Thin front end: parse the
// command line, dispatch, and turn every error into one line on stderr and exit code 1.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <new>
#include <string>
#include <string_view>

#include "commands.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/runtime/dist.hpp"

namespace {

void error_line(std::string_view prefix, std::string_view what) {
  const std::string line = std::string(prefix) + kvscope::cli::one_line(what) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

// Every command's output goes through stdout: a full disk, /dev/full or a closed stream is
// an error of the command (exit 1), not a success with the output lost.
int check_stdout(const std::string& running) {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  const int err = errno;
  if (flushed && !std::ferror(stdout)) return 0;
  error_line("kvscope: error: ",
             fmt::format("writing to standard output failed{}{}: {} (while running 'kvscope {}')",
                         err != 0 ? ": " : "", err != 0 ? std::strerror(err) : "",
                         "the output is incomplete", running));
  return 1;
}

int run_main(int argc, char** argv) {
  CLI::App app{"kvscope: how much of the KV cache can go, and which part must stay?", "kvscope"};
  app.require_subcommand(1);
  // --help shows each option's default (subcommands inherit this when they are added).
  app.option_defaults()->always_capture_default();
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
  // CLI11 reports an unknown command as "A subcommand is required": name it instead, at
  // every level (kvscope plot KIND).
  {
    const CLI::App* at = &app;
    std::string path = "kvscope";
    for (int i = 1; i < argc && argv[i][0] != '-'; ++i) {
      const auto subs = at->get_subcommands([](const CLI::App*) { return true; });
      if (subs.empty()) break;
      const CLI::App* next = nullptr;
      std::string names;
      for (const CLI::App* sub : subs) {
        if (sub->get_name() == argv[i]) next = sub;
        names += (names.empty() ? "" : ", ") + sub->get_name();
      }
      if (next == nullptr) {
        error_line("kvscope: error: ",
                   fmt::format("unknown command '{}' for '{}' (commands: {}; see '{} --help')",
                               argv[i], path, names, path));
        return 1;
      }
      at = next;
      path += " " + next->get_name();
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version print and exit 0 as CLI11 does; a usage error is a user error
    // like any other: one line, exit 1 (CLI11's own codes, 104-114, are not documented).
    if (e.get_exit_code() == int(CLI::ExitCodes::Success)) {
      const int rc = app.exit(e);
      return rc != 0 ? rc : check_stdout("--help");
    }
    std::string sub;
    for (const CLI::App* s : app.get_subcommands()) sub = " " + s->get_name();
    error_line("kvscope: error: ", fmt::format("{} (see 'kvscope{} --help')", e.what(), sub));
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
        const int rc = action();
        return rc != 0 ? rc : check_stdout(running);
      }
  } catch (const kvscope::Error& e) {
    error_line("kvscope: error: ", e.what());
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    // Symlink loops, over-long names, permissions: say which path and why, without the
    // library's "filesystem error: ..." wrapping.
    std::string paths = e.path1().string();
    if (!e.path2().empty()) paths += ", " + e.path2().string();
    error_line("kvscope: error: ", fmt::format("{}: {} (while running 'kvscope {}')", paths,
                                               e.code().message(), running));
    return 1;
  } catch (const std::bad_alloc&) {
    error_line("kvscope: error: ",
               fmt::format("out of memory while running 'kvscope {}' (an input asks for more "
                           "memory than this machine gives; check the sizes in the model, text "
                           "and config)",
                           running));
    return 1;
  } catch (const std::exception& e) {
    error_line("kvscope: unexpected error ",
               fmt::format("while running 'kvscope {}': {}", running, e.what()));
    return 1;
  }
  return 1;
}

}  // namespace

// OpenMP threads that wait for work spin (libgomp's default), and on a machine where
// another process holds a core a spinning thread takes the time the working one needs: on
// a busy 2-core machine 2 threads ran paper_a_energy 2.08x slower than 1 (bench/
// threads_under_load.sh; 1.03x with passive waits). Passive waiting removes that at a few
// percent on an idle machine. libgomp reads OMP_WAIT_POLICY once, in its own initializer,
// so the policy is set from the executable's .preinit_array, which the dynamic loader runs
// before any library's initializer (running the program again with the variable set, as
// before, loaded its 19 libraries twice: 8 of the 17 ms a start cost). A policy the user
// set is kept.
namespace {
void prefer_passive_omp_waits(int, char**, char**) {
  ::setenv("OMP_WAIT_POLICY", "passive", 0);  // 0: an existing value stays
}
}  // namespace
__attribute__((section(".preinit_array"),
               used)) static void (*const kPreferPassiveWaits)(int, char**,
                                                               char**) = prefer_passive_omp_waits;

int main(int argc, char** argv) {
  // glibc's start-up points environ back at the stack's copy after the initializers ran,
  // so the variable libgomp took is set again for this process's own readers (the
  // manifest) and its children.
  prefer_passive_omp_waits(argc, argv, nullptr);
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
