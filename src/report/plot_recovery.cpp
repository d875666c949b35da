// The recovery curves of a `kv_head_finetune` run.
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "kvscope/report/plot.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

namespace fs = std::filesystem;

std::vector<fs::path> plot_recovery(const fs::path& csv, const fs::path& out_dir) {
  const CsvData d = read_csv(csv);
  const size_t cm = d.column("model"), ct = d.column("text"), cme = d.column("method"),
               ck = d.column("kv_heads"), ctr = d.column("trainable"),
               ctok = d.column("tokens_trained"), cp = d.column("heldout_ppl");
  // figure (model, text, trainable) -> panel kv_heads -> method -> "tokens ppl" lines
  using Curves = std::map<std::string, std::string>;
  std::map<std::tuple<std::string, std::string, std::string>,
           std::map<int, Curves, std::greater<int>>>
      figs;  // panels from the most KV heads to the fewest, as the paper orders them
  std::map<std::tuple<std::string, std::string, std::string>, std::string> control;
  // The perplexity range of each panel and of each figure's control curve, so that every
  // panel's y axis shows its curves and the control (autoscaling on a log axis can leave a
  // control that sits just under a decade on the frame's edge).
  using Range = std::pair<double, double>;
  auto extend = [](Range& r, double x) {
    if (std::isfinite(x) && x > 0) r = {std::min(r.first, x), std::max(r.second, x)};
  };
  const Range empty{HUGE_VAL, -HUGE_VAL};
  std::map<std::tuple<std::string, std::string, std::string, int>, Range> panel_range;
  std::map<std::tuple<std::string, std::string, std::string>, Range> control_range;
  for (const auto& r : d.rows) {
    const auto key = std::tuple{r[cm], r[ct], r[ctr]};
    const std::string point = r[ctok] + " " + r[cp] + "\n";
    const double ppl = std::stod(r[cp]);
    if (r[cme] == "original") {
      control[key] += point;
      extend(control_range.try_emplace(key, empty).first->second, ppl);
    } else {
      figs[key][std::stoi(r[ck])][r[cme]] += point;
      extend(panel_range.try_emplace(std::tuple_cat(key, std::tuple{std::stoi(r[ck])}), empty)
                 .first->second,
             ppl);
    }
  }
  const char* colours[] = {"#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd"};
  std::vector<fs::path> written;
  for (const auto& [key, panels] : figs) {
    const auto& [model, text, trainable] = key;
    std::string data;
    std::set<std::string> methods;
    for (const auto& [g, curves] : panels)
      for (const auto& [meth, pts] : curves) {
        data += fmt::format("$D_{}_{} << EOD\n{}EOD\n", g, meth, pts);
        methods.insert(meth);
      }
    const bool has_control = control.count(key) > 0;
    if (has_control) data += "$CONTROL << EOD\n" + control.at(key) + "EOD\n";
    const std::string stem =
        fmt::format("recovery_{}__{}__{}", file_safe(model), file_safe(text), trainable);
    for (const char* ext : {"png", "svg"}) {
      const fs::path out = out_dir / fmt::format("{}.{}", stem, ext);
      std::string s = data + plot_detail::terminal(ext, 520 * int(panels.size()) + 80, 480) + "\n";
      s += fmt::format("set output '{}.partial'\n", out.string());
      s += fmt::format("set multiplot layout 1,{} title '{} on {}: fine-tuning {} weights'\n",
                       panels.size(), model, text, trainable);
      // The x axis ends at the last evaluation (autoscaling ran it on to the next tic).
      s += "set logscale y\nset grid\nset key top right\nset xlabel 'tokens trained'\n"
           "set ylabel 'held-out perplexity'\nset autoscale xfix\nset offsets 0, 0, 0, 0\n";
      for (const auto& [g, curves] : panels) {
        Range y = panel_range.at(std::tuple_cat(key, std::tuple{g}));
        if (has_control) {
          extend(y, control_range.at(key).first);
          extend(y, control_range.at(key).second);
        }
        s += y.first <= y.second ? plot_detail::log_yrange(y.first, y.second)
                                 : std::string("set yrange [*:*]\n");
        s += fmt::format("set title '{} KV heads'\nplot ", g);
        std::string sep;
        int i = 0;
        for (const std::string& meth : methods) {
          const int colour = i++ % 5;
          if (!curves.count(meth)) continue;
          s += fmt::format("{}$D_{}_{} using 1:2 with linespoints lw 2 lc rgb '{}' title '{}'", sep,
                           g, meth, colours[colour], meth);
          sep = ", ";
        }
        if (has_control)
          s += sep +
               "$CONTROL using 1:2 with lines dt 2 lw 2 lc rgb '#444444' title 'original model, "
               "fine-tuned the same (control)'";
        s += "\n";
      }
      s += "unset multiplot\nunset output\n";
      run_gnuplot(s, {out}, "plot " + out.string());
      written.push_back(out);
    }
  }
  return written;
}

}  // namespace kvscope
