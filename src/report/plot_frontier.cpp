// `kvscope plot frontier`: the KV-compression frontier of each model, one panel per task
// and measure, the share of the cache held on a log axis; a line style per family
// (eviction solid, quantization dotted, low rank dash-dot, merged heads long dashes,
// compositions short dashes).
#include <algorithm>
#include <cmath>
#include <map>

#include "kvscope/report/plot.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

namespace fs = std::filesystem;

namespace {

// Distinct colours for up to 10 methods (Tableau 10); the full cache is black.
const char* const kColours[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

int dashtype(const std::string& family) {
  if (family == "quantization") return 3;
  if (family == "low_rank") return 4;
  if (family == "merged_heads") return 5;
  if (family == "composition") return 2;
  return 1;
}

}  // namespace

std::vector<fs::path> plot_frontier(const fs::path& frontier_csv, const fs::path& out_dir) {
  const CsvData d = read_csv(frontier_csv);
  const size_t c_model = d.column("model"), c_method = d.column("method"),
               c_task = d.column("task"), c_measure = d.column("measure"),
               c_value = d.column("value"), c_se = d.column("se"), c_share = d.column("kv_share");
  // Runs before the families joined have no family column: all of them evict.
  const auto fam_it = std::find(d.header.begin(), d.header.end(), "family");
  const size_t c_family = size_t(fam_it - d.header.begin());
  std::map<std::string, std::string> family;  // method -> family
  struct Point {
    double share, value, se;
  };
  using Panel = std::map<std::string, std::vector<Point>>;  // method -> points
  struct Fig {
    std::vector<std::string> panels, methods;  // in order of appearance
    std::map<std::string, Panel> data;
  };
  std::map<std::string, Fig> figs;
  std::vector<std::string> order;
  auto add_once = [](std::vector<std::string>& v, const std::string& s) {
    if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
  };
  for (const auto& r : d.rows) {
    if (r[c_measure] == "nll") continue;  // the perplexity panel shows it
    if (!figs.count(r[c_model])) order.push_back(r[c_model]);
    Fig& f = figs[r[c_model]];
    const std::string panel = r[c_task] + " " + r[c_measure];
    add_once(f.panels, panel);
    add_once(f.methods, r[c_method]);
    family[r[c_method]] = fam_it == d.header.end() ? "eviction" : r[c_family];
    const double v = std::stod(r[c_value]), sh = std::stod(r[c_share]);
    if (std::isfinite(v) && std::isfinite(sh) && sh > 0)
      f.data[panel][r[c_method]].push_back(
          {sh, v, std::isfinite(std::stod(r[c_se])) ? std::stod(r[c_se]) : 0.0});
  }
  std::vector<fs::path> written;
  for (const std::string& model : order) {
    Fig& f = figs[model];
    const int n = int(f.panels.size()), cols = std::min(n, 3), rows = (n + cols - 1) / cols;
    double lo = 1.0;
    std::string data;
    for (size_t p = 0; p < f.panels.size(); ++p)
      for (size_t mi = 0; mi < f.methods.size(); ++mi) {
        std::vector<Point> pts = f.data[f.panels[p]][f.methods[mi]];
        std::sort(pts.begin(), pts.end(),
                  [](const Point& a, const Point& b) { return a.share < b.share; });
        data += fmt::format("$D{}_{} << EOD\n", p, mi);
        for (const Point& q : pts) {
          data += fmt::format("{:.6g} {:.6g} {:.6g}\n", q.share, q.value, q.se);
          lo = std::min(lo, q.share);
        }
        data += pts.empty() ? "1 NaN 0\nEOD\n" : "EOD\n";
      }
    // The key gets its own strip right of the panels (a method per line, in as many
    // columns as the height needs), so that thirty methods do not squeeze a panel.
    // gnuplot keeps a key within its panel's height: about 22 px a line at font 9.
    const int panels_w = 540 * cols, H = 90 + 400 * rows;
    const double top = 85, bottom = 55, left = 80, hspace = 95, vspace = 105;
    const double panel_h = (H - top - bottom - vspace * (rows - 1)) / rows;
    const int key_rows = std::max(1, int(panel_h / 22));
    const int key_cols = (int(f.methods.size()) + key_rows - 1) / key_rows;
    const int W = panels_w + 210 * key_cols + 20;
    for (const char* ext : {"png", "svg"}) {
      const fs::path out = out_dir / fmt::format("frontier_{}.{}", file_safe(model), ext);
      std::string s = data + plot_detail::terminal(ext, W, H) + "\n";
      s += fmt::format("set output '{}.partial'\n", out.string());
      s += fmt::format(
          "set multiplot layout {},{} margins {:.4f},{:.4f},{:.4f},{:.4f} spacing {:.4f},{:.4f} "
          "title '{}: each method at each budget against the full cache (dashed); x: share of "
          "the KV cache held (peak bytes), error bars 1 SE'\n",
          rows, cols, left / W, (panels_w - 10.0) / W, bottom / H, (H - top) / H, hspace / W,
          vspace / H, plot_detail::gnuplot_quote(model));
      s += fmt::format(
          "set logscale x 2\nset xrange [{:.6g}:1.3]\nset xlabel 'share of the KV cache held'\n"
          "set grid\n",
          lo / 1.3);
      for (size_t p = 0; p < f.panels.size(); ++p) {
        // Perplexity and KL span decades between the best and the worst methods.
        const std::string measure = f.panels[p].substr(f.panels[p].rfind(' ') + 1);
        s += measure == "perplexity" || measure == "kl" ? "set logscale y\nset format y '%g'\n"
                                                        : "unset logscale y\nset format y '% h'\n";
        // One key, on the first panel, outside the data.
        s += p == 0 ? fmt::format("set key at screen {:.4f},{:.4f} top left font ',9' maxrows {}\n",
                                  (panels_w + 15.0) / W, (H - top) / H, key_rows)
                    : "set key off\n";
        s += fmt::format(
            "set title '{}'\nset ylabel '{}'\nplot ", plot_detail::gnuplot_quote(f.panels[p]),
            plot_detail::gnuplot_quote(f.panels[p].substr(f.panels[p].rfind(' ') + 1)));
        bool first = true;
        for (size_t mi = 0; mi < f.methods.size(); ++mi) {
          const bool full = f.methods[mi] == "full";
          s += fmt::format(
              "{}$D{}_{} using 1:2:3 with yerrorlines title '{}' {}", first ? "" : ", ", p, mi,
              plot_detail::gnuplot_quote(f.methods[mi]),
              full ? std::string("pointtype 7 linecolor rgb 'black'")
                   : fmt::format("pointtype {} linecolor rgb '{}' dashtype {}", 1 + mi % 12,
                                 kColours[(mi - 1) % (sizeof kColours / sizeof kColours[0])],
                                 dashtype(family[f.methods[mi]])));
          if (full && !f.data[f.panels[p]]["full"].empty())
            s += fmt::format(", {:.9g} with lines dashtype 2 linecolor rgb 'black' notitle",
                             f.data[f.panels[p]]["full"][0].value);
          first = false;
        }
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
