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
  return [a, spectrum]() {
    if (spectrum->parsed()) {
      const std::filesystem::path csv = a->csv;
      const std::filesystem::path out =
          a->out.empty() ? csv.parent_path() : std::filesystem::path(a->out);
      std::filesystem::create_directories(out);
      for (const auto& f : plot_spectrum(csv, out)) std::printf("%s\n", f.c_str());
    }
    return 0;
  };
}

}  // namespace kvscope::cli
