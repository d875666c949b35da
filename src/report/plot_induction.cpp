// Figures about induction heads: how they form in training (a train run's induction.csv)
// and how many of them RazorAttention must protect (a kv_cache_policies policies.csv with
// several induction shares, beside the paper's needle ablation).
#include <algorithm>
#include <cmath>
#include <map>

#include "kvscope/io/error.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

namespace fs = std::filesystem;

std::vector<fs::path> plot_induction(const fs::path& induction_csv, const fs::path& out_dir,
                                     const std::string& run) {
  const CsvData d = read_csv(induction_csv);
  // The run: given, else the results directory the CSV is in (results/NAME/induction.csv;
  // NAME.partial while the run writes it).
  std::string name = run;
  if (name.empty()) {
    name = fs::absolute(induction_csv).lexically_normal().parent_path().filename().string();
    if (name.size() > 8 && name.ends_with(".partial")) name.resize(name.size() - 8);
  }
  const size_t c_block = d.column("block_tokens"), c_ratio = d.column("induction_ratio"),
               c_drop = d.column("copy_drop"), c_prev = d.column("best_previous"),
               c_step = d.column("step");
  KV_CHECK(!d.rows.empty(), "plot induction: {} has no rows", induction_csv.string());
  // x: steps (block tokens are 0 in a text-only stage).
  std::string data = "$D << EOD\n";
  for (const auto& r : d.rows)
    data += fmt::format("{} {} {} {} {}\n", r[c_step], r[c_block], r[c_ratio],
                        100 * std::stod(r[c_drop]), r[c_prev]);
  data += "EOD\n";
  std::vector<fs::path> written;
  for (const char* ext : {"png", "svg"}) {
    const fs::path out = out_dir / fmt::format("induction.{}", ext);
    std::string s = data + plot_detail::terminal(ext, 1100, 420) + "\n";
    s += fmt::format("set output '{}.partial'\n", out.string());
    s += fmt::format(
        "set multiplot layout 1,2 title '{}: induction forming, probe scores and copy loss at "
        "each evaluation'\nset xlabel 'step'\nset grid\nset key top left\n",
        plot_detail::gnuplot_quote(name));
    s += "set ylabel 'best induction score / uniform'\nset logscale y\n"
         "plot $D using 1:3 with linespoints title 'induction / uniform', 5 dt 2 lc 'gray' "
         "title '5x (the bar)'\nunset logscale y\n";
    s += "set ylabel 'percent / score'\nset yrange [*:100]\n"
         "plot $D using 1:4 with linespoints title 'copy drop (%)', $D using 1:($5*100) with "
         "linespoints title 'previous-token score x 100', 50 dt 2 lc 'gray' title '50%'\n";
    s += "unset multiplot\nunset output\n";
    run_gnuplot(s, {out}, "plot " + out.string());
    written.push_back(out);
  }
  return written;
}

std::vector<fs::path> plot_ablation(const fs::path& policies_csv, const fs::path& out_dir) {
  const CsvData d = read_csv(policies_csv);
  // The needle test: the passkey task where it ran, else name recall.
  const bool has_pk =
      std::find(d.header.begin(), d.header.end(), "passkey_accuracy") != d.header.end();
  bool passkey = false;
  for (const auto& r : d.rows) passkey |= has_pk && r[d.column("passkey_accuracy")] != "nan";
  const size_t c_model = d.column("model"), c_policy = d.column("policy"),
               c_prot = d.column("protected_heads"), c_kv = d.column("kv_heads"),
               c_acc = d.column(passkey ? "passkey_accuracy" : "recall_accuracy");
  std::map<std::string, double> full;
  std::map<std::string, std::vector<std::pair<double, double>>> pts;  // share %, acc / full
  std::vector<std::string> order;
  for (const auto& r : d.rows)
    if (r[c_policy] == "full") full[r[c_model]] = std::stod(r[c_acc]);
  for (const auto& r : d.rows) {
    if (r[c_policy].rfind("razor@", 0) != 0 || !full.count(r[c_model])) continue;
    if (!pts.count(r[c_model])) order.push_back(r[c_model]);
    pts[r[c_model]].push_back(
        {100 * std::stod(r[c_prot]) / std::stod(r[c_kv]), std::stod(r[c_acc]) / full[r[c_model]]});
  }
  std::vector<fs::path> written;
  for (const std::string& model : order) {
    auto& p = pts[model];
    std::sort(p.begin(), p.end());
    // The paper (Qwen1.5-7B, needle in a haystack): 5/8/11/14% induction heads + 1% echo
    // -> 69.54 / 78.40 / 84.55 / 86.59, full cache 87.05.
    std::string s0 = "$P << EOD\n6 0.79885\n9 0.90063\n12 0.97128\n15 0.99472\nEOD\n$K << EOD\n";
    for (const auto& [x, y] : p) s0 += fmt::format("{} {}\n", x, y);
    s0 += "EOD\n";
    for (const char* ext : {"png", "svg"}) {
      const fs::path out = out_dir / fmt::format("ablation_{}.{}", file_safe(model), ext);
      std::string s = s0 + plot_detail::terminal(ext, 700, 460) + "\n";
      s += fmt::format("set output '{}.partial'\n", out.string());
      s += fmt::format(
          "set title '{}: {} under razor, as a share of the full cache'\n"
          "set xlabel 'heads kept whole (% of KV heads)'\nset ylabel 'accuracy / full cache'\n"
          "set grid\nset key bottom right\nset yrange [0:1.1]\nset xrange [0:*]\n"
          "plot $K using 1:2 with linespoints pt 7 title '{} (kvscope)', $P using 1:2 with "
          "linespoints pt 5 title 'paper: Qwen1.5-7B needle', 1 dt 2 lc 'gray' title 'full "
          "cache'\nunset output\n",
          model, passkey ? "passkey accuracy" : "name recall", model);
      run_gnuplot(s, {out}, "plot " + out.string());
      written.push_back(out);
    }
  }
  return written;
}

}  // namespace kvscope
