#include "commands.hpp"
#include "kvscope/experiments/experiment.hpp"

namespace kvscope::cli {

Action add_run(CLI::App& app) {
  struct Args {
    std::string config, results = "results";
    int threads = -1, digits = 0;
    bool quiet = false, force = false;
  };
  auto a = std::make_shared<Args>();
  std::string kinds;
  for (const ExperimentKind& k : experiment_kinds()) kinds += "\n  " + k.name + ": " + k.summary;
  app.footer("Experiment kinds:" + kinds);
  app.add_option("config", a->config, "experiment config, e.g. configs/perplexity.yaml")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--results", a->results, "results root directory");
  app.add_option("--threads", a->threads, "threads, overriding the config (0: all cores)")
      ->check(at_least(0));
  app.add_flag("--quiet,-q", a->quiet, "no progress lines on stderr");
  app.add_option("--digits", a->digits,
                 "significant digits of every float in the CSVs (17: exact doubles, to compare "
                 "runs bit for bit; default: each column's own, mostly 9)")
      ->check(CLI::Range(1, 17));
  app.add_flag("--force", a->force, "replace results/NAME/ when it exists");
  return [a]() {
    RunOptions o;
    o.results_root = a->results;
    o.threads = a->threads;
    o.verbose = !a->quiet;
    o.force = a->force;
    o.csv_digits = a->digits;
    run_experiment(a->config, o);
    return 0;
  };
}

}  // namespace kvscope::cli
