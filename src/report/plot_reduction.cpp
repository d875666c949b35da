// Bar charts of a `kv_head_reduction` run.
#include "kvscope/report/plot.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "kvscope/io/error.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

using plot_detail::kTerminals;

namespace fs = std::filesystem;

std::vector<fs::path> plot_reduction(const fs::path& csv, const fs::path& out_dir) {
  const CsvData d = read_csv(csv);
  const size_t c_model = d.column("model"), c_text = d.column("text"),
               c_method = d.column("method"), c_heads = d.column("kv_heads"),
               c_cal = d.column("calibration_tokens"), c_ppl = d.column("perplexity");
  struct Fig {
    std::string original_ppl, original_heads;
    std::vector<std::string> targets;                                // in order of appearance
    std::vector<std::string> series;                                 // method [@ tokens]
    std::map<std::pair<std::string, std::string>, std::string> ppl;  // (target, series)
  };
  std::map<std::pair<std::string, std::string>, Fig> figs;
  std::map<std::pair<std::string, std::string>, std::set<std::string>> counts;  // per method
  for (const auto& r : d.rows) counts[{r[c_model], r[c_method]}].insert(r[c_cal]);
  for (const auto& r : d.rows) {
    Fig& f = figs[{r[c_model], r[c_text]}];
    if (r[c_method] == "original") {
      f.original_ppl = r[c_ppl];
      f.original_heads = r[c_heads];
      continue;
    }
    const bool several = counts[{r[c_model], r[c_method]}].size() > 1;
    const std::string series = r[c_method] + (several ? " @ " + r[c_cal] + " tokens" : "");
    if (std::find(f.targets.begin(), f.targets.end(), r[c_heads]) == f.targets.end())
      f.targets.push_back(r[c_heads]);
    if (std::find(f.series.begin(), f.series.end(), series) == f.series.end())
      f.series.push_back(series);
    f.ppl[{r[c_heads], series}] = r[c_ppl];
  }
  std::vector<fs::path> written;
  const char* colors[] = {"#3b528b", "#21908d", "#5ec962", "#fde725",
                          "#440154", "#e76f51", "#9d4edd", "#6c757d"};
  for (const auto& [key, f] : figs) {
    const std::string stem = file_safe(key.first) + "__" + file_safe(key.second);
    std::string data = "$P << EOD\n";
    for (const std::string& t : f.targets) {
      data += "\"" + f.original_heads + " -> " + t + " KV heads\"";
      for (const std::string& s : f.series) {
        auto it = f.ppl.find({t, s});
        data += " " + (it == f.ppl.end() ? std::string("NaN") : it->second);
      }
      data += "\n";
    }
    data += "EOD\n";
    // The y range spans every bar and the original's line (autoscaling would leave the
    // original out when every reduced model is much worse).
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    auto extend = [&](const std::string& v) {
      const double x = std::stod(v);
      if (std::isfinite(x) && x > 0) lo = std::min(lo, x), hi = std::max(hi, x);
    };
    for (const auto& [_, v] : f.ppl) extend(v);
    if (!f.original_ppl.empty()) extend(f.original_ppl);
    const std::string yrange = lo <= hi ? plot_detail::log_yrange(lo, hi) : "set yrange [*:*]\n";
    for (const auto& [ext, term] : kTerminals) {
      const fs::path out = out_dir / fmt::format("reduction_{}.{}", stem, ext);
      std::string s = data + std::string(term) + "\n";
      s += fmt::format("set output '{}.partial'\n", out.string());
      s += fmt::format(
          "set title '{} on {}: perplexity after reducing KV heads (original {} heads: {})'\n",
          key.first, key.second, f.original_heads,
          f.original_ppl.empty() ? std::string("?")
                                 : fmt::format("{:.2f}", std::stod(f.original_ppl)));
      s += "set style data histograms\nset style histogram clustered gap 1\n"
           "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset logscale y\n"
           "set grid ytics mytics\nset ylabel 'perplexity (log scale)'\n"
           "set key outside right top vertical\n" +
           yrange;
      if (!f.original_ppl.empty())
        s += fmt::format(
            "set arrow from graph 0, first {0} to graph 1, first {0} nohead dt 2 "
            "lw 2 lc rgb '#d62728' front\n",
            f.original_ppl);
      s += "plot ";
      for (size_t i = 0; i < f.series.size(); ++i)
        s += fmt::format("{}$P using {}{} title '{}' lc rgb '{}'", i ? ", " : "", i + 2,
                         i == 0 ? ":xtic(1)" : "", f.series[i], colors[i % 8]);
      s += ", NaN with lines dt 2 lw 2 lc rgb '#d62728' title 'original'\nunset output\n";
      run_gnuplot(s, {out}, "plot " + out.string());
      written.push_back(out);
    }
  }
  return written;
}

}  // namespace kvscope
