// The training curves of a `train` run.
#include "kvscope/report/plot.hpp"

#include <cmath>

#include "kvscope/report/manifest.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

namespace fs = std::filesystem;

namespace {

// A gnuplot double-quoted string: backslash escapes, so a newline starts a second line.
std::string gnuplot_quote(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '\n')
      o += "\\n";
    else if (c == '"' || c == '\\')
      o += std::string("\\") + c;
    else
      o += c;
  }
  return o + "\"";
}

}  // namespace

std::string training_title(const nlohmann::json& config) {
  const std::string name = config.value("name", std::string("train"));
  const nlohmann::json train = config.value("train", nlohmann::json::object());
  const nlohmann::json a = train.value("architecture", nlohmann::json::object());
  auto num = [&](const char* k) { return a.contains(k) ? a[k].dump() : std::string("?"); };
  std::string texts;
  for (const auto& t : config.value("texts", nlohmann::json::array()))
    if (t.is_object())
      texts += (texts.empty() ? "" : ", ") + t.value("name", t.value("path", std::string("?")));
  return fmt::format("{}: dim {}, {} layers, {}/{} heads, context {}, {}{}", name, num("dim"),
                     num("n_layers"), num("n_heads"), num("n_kv_heads"), num("context"),
                     a.value("positional", std::string("rope")),
                     texts.empty() ? "" : "\ntrained on " + texts);
}

std::vector<fs::path> plot_training_run(const fs::path& loss_csv, const fs::path& out_dir) {
  const fs::path dir = loss_csv.parent_path();
  const nlohmann::json config = read_manifest(dir / "manifest.json").config;
  return plot_training(loss_csv, dir / "eval.csv", out_dir, training_title(config));
}

std::vector<fs::path> plot_training(const fs::path& loss_csv, const fs::path& eval_csv,
                                    const fs::path& out_dir, const std::string& title) {
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
    s += fmt::format("set title {}\n", gnuplot_quote(title));
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
