#include <cstdio>

#include "commands.hpp"
#include "kvscope/plot.hpp"

namespace kvscope::cli {

Action add_plot(CLI::App& app) {
  struct Args {
    std::string csv, out;
  };
  auto a = std::make_shared<Args>();
  app.require_subcommand(1);
  CLI::App* spectrum = app.add_subcommand(
      "spectrum",
      "Cumulative singular-value energy per layer (K pre/post RoPE, V) and top-25%/50% energy "
      "bars, from a kv_spectrum spectrum.csv");
  spectrum->add_option("csv", a->csv, "results/NAME/spectrum.csv")
      ->required()
      ->check(CLI::ExistingFile);
  spectrum->add_option("--out,-o", a->out, "output directory (default: the CSV's directory)");
  CLI::App* reduction = app.add_subcommand(
      "reduction",
      "Perplexity by method and target KV heads, from a kv_head_reduction reduction.csv");
  reduction->add_option("csv", a->csv, "results/NAME/reduction.csv")
      ->required()
      ->check(CLI::ExistingFile);
  reduction->add_option("--out,-o", a->out, "output directory (default: the CSV's directory)");
  return [a, spectrum, reduction]() {
    const std::filesystem::path csv = a->csv;
    const std::filesystem::path out =
        a->out.empty() ? csv.parent_path() : std::filesystem::path(a->out);
    std::filesystem::create_directories(out);
    const auto files = spectrum->parsed() ? plot_spectrum(csv, out) : plot_reduction(csv, out);
    for (const auto& f : files) std::printf("%s\n", f.c_str());
    (void)reduction;
    return 0;
  };
}

}  // namespace kvscope::cli
