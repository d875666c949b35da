// The training curves of a `train` run.
#include "kvscope/report/plot.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

namespace fs = std::filesystem;

std::vector<fs::path> plot_training(const fs::path& loss_csv, const fs::path& eval_csv,
                                    const fs::path& out_dir) {
  const CsvData l = read_csv(loss_csv), e = read_csv(eval_csv);
  std::string data = "$L << EOD\n";
  for (const auto& r : l.rows) data += r[l.column("step")] + " " + r[l.column("loss")] + "\n";
  data += "EOD\n$E << EOD\n";
  std::string unigram = "NaN";
  for (const auto& r : e.rows) {
    data += r[e.column("step")] + " " + r[e.column("heldout_nll")] + "\n";
    unigram = fmt::format("{}", std::log(std::stod(r[e.column("unigram_ppl")])));
  }
  data += "EOD\n";
  std::vector<fs::path> written;
  for (const char* ext : {"png", "svg"}) {
    const fs::path out = out_dir / fmt::format("training.{}", ext);
    std::string s = data + plot_detail::terminal(ext, 900, 500) + "\n";
    s += fmt::format("set output '{}.partial'\n", out.string());
    s += "set xlabel 'step'\nset ylabel 'loss (nats per token)'\nset grid\nset key top right\n";
    s += fmt::format(
        "plot $L using 1:2 with lines lc rgb '#9ecae1' title 'training batch', "
        "$E using 1:2 with linespoints lw 2 lc rgb '#08519c' title 'held-out', "
        "{} with lines dt 2 lc rgb '#d62728' title 'unigram baseline'\nunset output\n",
        unigram);
    run_gnuplot(s, {out}, "plot " + out.string());
    written.push_back(out);
  }
  return written;
}

}  // namespace kvscope
