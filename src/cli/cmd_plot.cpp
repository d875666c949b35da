#include <cstdio>

#include "commands.hpp"
#include "kvscope/report/plot.hpp"

namespace kvscope::cli {

namespace {

using PlotFn = std::vector<std::filesystem::path> (*)(const std::filesystem::path&,
                                                      const std::filesystem::path&);

struct PlotKind {
  const char* name;
  const char* help;
  const char* csv;  // what the positional argument names
  PlotFn fn;
};

const PlotKind kPlots[] = {
    {"spectrum",
     "Cumulative singular-value energy per layer (K pre/post RoPE, V), the singular values over "
     "the largest on a log axis, and top-25%/50% energy bars, from a kv_spectrum spectrum.csv",
     "results/NAME/spectrum.csv", plot_spectrum},
    {"reduction",
     "Perplexity by method and target KV heads, from a kv_head_reduction reduction.csv",
     "results/NAME/reduction.csv", plot_reduction},
    {"heads",
     "Layer x head heat maps of induction and echo scores, from a retrieval_heads heads.csv",
     "results/NAME/heads.csv", plot_heads},
    {"recall",
     "Name-recall accuracy by context length and depth, per policy, from a kv_cache_policies "
     "recall.csv",
     "results/NAME/recall.csv", plot_recall},
    {"ablation",
     "Recall under razor against the share of heads kept whole, beside the paper's needle "
     "ablation, from a kv_cache_policies policies.csv with several induction_shares",
     "results/NAME/policies.csv", plot_ablation},
    {"frontier",
     "Each eviction method's measures against the share of the KV cache held, from a "
     "kv_frontier frontier.csv",
     "results/NAME/frontier.csv", plot_frontier},
    {"induction",
     "Induction score / uniform and copy-loss drop per evaluation, from a train run's "
     "induction.csv (train.probe)",
     "results/NAME/induction.csv",
     [](const std::filesystem::path& csv, const std::filesystem::path& out) {
       return plot_induction(csv, out);  // titled with the CSV's directory, the run
     }},
    {"recovery",
     "Held-out perplexity against tokens of fine-tuning, per initialisation and KV-head count, "
     "from a kv_head_finetune recovery.csv",
     "results/NAME/recovery.csv", plot_recovery},
    {"training",
     "Training and held-out loss per step, from a train run's loss.csv (with eval.csv and "
     "manifest.json beside it)",
     "results/NAME/loss.csv", plot_training_run},
};

}  // namespace

Action add_plot(CLI::App& app) {
  struct Args {
    std::string csv, out;
    const PlotKind* kind = nullptr;
  };
  auto a = std::make_shared<Args>();
  app.require_subcommand(1);
  for (const PlotKind& k : kPlots) {
    CLI::App* sub = app.add_subcommand(k.name, k.help);
    sub->add_option("csv", a->csv, k.csv)->required()->check(CLI::ExistingFile);
    sub->add_option("--out,-o", a->out, "output directory (default: the CSV's directory)");
    sub->parse_complete_callback([a, &k] { a->kind = &k; });
  }
  return [a]() {
    const std::filesystem::path csv = a->csv;
    const std::filesystem::path out =
        a->out.empty() ? csv.parent_path() : std::filesystem::path(a->out);
    std::filesystem::create_directories(out);
    for (const auto& f : a->kind->fn(csv, out)) std::printf("%s\n", f.c_str());
    return 0;
  };
}

}  // namespace kvscope::cli
