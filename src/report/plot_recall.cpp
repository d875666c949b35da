// `kvscope plot recall`: name-recall accuracy heat maps (context length x needle depth),
// one panel per cache policy.
#include <algorithm>
#include <cmath>
#include <map>

#include "kvscope/io/error.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

namespace fs = std::filesystem;

std::vector<fs::path> plot_recall(const fs::path& recall_csv, const fs::path& out_dir) {
  const CsvData d = read_csv(recall_csv);
  const size_t c_model = d.column("model"), c_policy = d.column("policy"),
               c_len = d.column("length"), c_depth = d.column("depth"),
               c_acc = d.column("accuracy"), c_chance = d.column("chance"),
               c_share = d.column("kv_share");
  struct Fig {
    std::vector<std::string> policies, lengths, depths;  // in order of appearance
    std::map<std::tuple<std::string, std::string, std::string>, double> acc;
    std::map<std::string, std::pair<double, double>> share;  // policy -> min, max kept
    std::string chance;
  };
  std::map<std::string, Fig> figs;
  std::vector<std::string> order;
  auto add_once = [](std::vector<std::string>& v, const std::string& s) {
    if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
  };
  for (const auto& r : d.rows) {
    // Random-head draws (razor_random#3): dozens of panels of one control, summarised in
    // REPORT.md (B4, C1) instead.
    if (r[c_policy].find('#') != std::string::npos) continue;
    if (!figs.count(r[c_model])) order.push_back(r[c_model]);
    Fig& f = figs[r[c_model]];
    add_once(f.policies, r[c_policy]);
    add_once(f.lengths, r[c_len]);
    add_once(f.depths, r[c_depth]);
    f.acc[{r[c_policy], r[c_len], r[c_depth]}] = std::stod(r[c_acc]);
    const double sh = std::stod(r[c_share]);
    auto [it, fresh] = f.share.try_emplace(r[c_policy], sh, sh);
    if (!fresh) it->second = {std::min(it->second.first, sh), std::max(it->second.second, sh)};
    f.chance = r[c_chance];
  }
  std::vector<fs::path> written;
  for (const std::string& model : order) {
    Fig& f = figs[model];
    std::sort(f.depths.begin(), f.depths.end(), [](const std::string& a, const std::string& b) {
      return std::stod(a) < std::stod(b);
    });
    const int n = int(f.policies.size()), cols = std::min(n, 4), rows = (n + cols - 1) / cols;
    std::string s0;
    for (size_t p = 0; p < f.policies.size(); ++p) {
      s0 += fmt::format("$P{} << EOD\n", p);
      for (size_t y = 0; y < f.depths.size(); ++y)
        for (size_t x = 0; x < f.lengths.size(); ++x) {
          auto it = f.acc.find({f.policies[p], f.lengths[x], f.depths[y]});
          const double v = it == f.acc.end() ? NAN : it->second;
          s0 += fmt::format("{} {} {} \"{:.2f}\"\n", x, y, v, v);
        }
      s0 += "EOD\n";
    }
    std::string xt, yt;
    for (size_t x = 0; x < f.lengths.size(); ++x)
      xt += fmt::format("{}'{}' {}", x ? ", " : "", f.lengths[x], x);
    for (size_t y = 0; y < f.depths.size(); ++y)
      yt += fmt::format("{}'{:g}' {}", y ? ", " : "", std::stod(f.depths[y]), y);
    for (const char* ext : {"png", "svg"}) {
      // recall.csv or passkey.csv (the same grid; the file's stem names the task).
      const std::string task = recall_csv.stem().string();
      const fs::path out = out_dir / fmt::format("{}_{}.{}", task, file_safe(model), ext);
      std::string s = s0 + plot_detail::terminal(ext, 380 * cols + 90, 60 + 300 * rows) + "\n";
      s += fmt::format("set output '{}.partial'\n", out.string());
      // One colour scale for every panel (accuracy 0-1), drawn once at the right; each
      // panel names its policy and the share of the KV cache it keeps (its cache budget).
      s += fmt::format(
          "set multiplot layout {},{} title '{}: {} accuracy (chance {:.3f}) by context "
          "length and needle depth; each panel: policy, share of the KV cache kept' "
          "margins 0.06,0.90,0.08,{:.3f} spacing 0.07,{:.3f}\n",
          rows, cols, model, task == "passkey" ? "passkey" : "name recall", std::stod(f.chance),
          1.0 - 80.0 / (60 + 300 * rows), 0.35 / rows);  // 80 px for the title
      s += fmt::format(
          "set xtics ({})\nset ytics ({})\nset xrange [-0.5:{}]\nset yrange [-0.5:{}]\n"
          "set xlabel 'context tokens'\nset ylabel 'needle depth'\nset cbrange [0:1]\n"
          "set palette defined (0 '#ffffff', 0.5 '#6baed6', 1 '#08306b')\nunset key\n",
          xt, yt, f.lengths.size() - 0.5, f.depths.size() - 0.5);
      for (size_t p = 0; p < f.policies.size(); ++p) {
        const auto [lo, hi] = f.share.at(f.policies[p]);
        const std::string kept =
            std::lround(lo * 100) == std::lround(hi * 100)
                ? fmt::format("{}% kept", std::lround(hi * 100))
                : fmt::format("{}-{}% kept", std::lround(lo * 100), std::lround(hi * 100));
        s += p + 1 == f.policies.size()
                 ? "set colorbox user origin screen 0.925, screen 0.15 size screen 0.018, "
                   "screen 0.7\nset cblabel 'accuracy'\n"
                 : "unset colorbox\n";
        s += fmt::format(
            "set title '{}: {}'\nplot $P{} using 1:2:3 with image, $P{} using 1:2:4 with "
            "labels font ',9'\n",
            f.policies[p], kept, p, p);
      }
      s += "unset multiplot\nunset output\n";
      run_gnuplot(s, {out}, "plot " + out.string());
      written.push_back(out);
    }
  }
  return written;
}

}  // namespace kvscope
