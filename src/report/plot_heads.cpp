// `kvscope plot heads`: layer x head heat maps of the retrieval-head scores.
#include <map>

#include "kvscope/io/error.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

namespace fs = std::filesystem;

std::vector<fs::path> plot_heads(const fs::path& heads_csv, const fs::path& out_dir) {
  const CsvData d = read_csv(heads_csv);
  const size_t c_model = d.column("model"), c_layer = d.column("layer"),
               c_head = d.column("kv_head"), c_echo = d.column("echo"),
               c_ind = d.column("induction"), c_sel = d.column("retrieval");
  struct Cell {
    int layer, head;
    std::string echo, ind;
    bool selected;
  };
  std::map<std::string, std::vector<Cell>> models;
  std::vector<std::string> order;
  for (const auto& r : d.rows) {
    if (!models.count(r[c_model])) order.push_back(r[c_model]);
    models[r[c_model]].push_back(
        {std::stoi(r[c_layer]), std::stoi(r[c_head]), r[c_echo], r[c_ind], r[c_sel] == "1"});
  }
  std::vector<fs::path> written;
  for (const std::string& model : order) {
    const std::vector<Cell>& cells = models[model];
    int n_layers = 0, n_heads = 0;
    for (const Cell& c : cells) n_layers = std::max(n_layers, c.layer + 1);
    for (const Cell& c : cells) n_heads = std::max(n_heads, c.head + 1);
    // x = KV head, y = layer; the label holds the score, '*' marks the selected heads.
    std::string data = "$S << EOD\n";
    for (const Cell& c : cells)
      data += fmt::format("{} {} {} {} \"{:.2g}{}\" \"{:.2g}{}\"\n", c.head, c.layer, c.ind, c.echo,
                          std::stod(c.ind), c.selected ? "*" : "", std::stod(c.echo),
                          c.selected ? "*" : "");
    data += "EOD\n";
    const int w = std::max(700, 2 * (140 + 70 * n_heads)), h = std::max(360, 140 + 45 * n_layers);
    for (const char* ext : {"png", "svg"}) {
      const fs::path out = out_dir / fmt::format("heads_{}.{}", file_safe(model), ext);
      std::string s = data + plot_detail::terminal(ext, w, h) + "\n";
      s += fmt::format("set output '{}.partial'\n", out.string());
      s += fmt::format(
          "set multiplot layout 1,2 title '{}: retrieval-head scores per KV head (max over its "
          "query heads); * = selected'\n",
          model);
      s += fmt::format(
          "set xrange [-0.5:{}]\nset yrange [-0.5:{}]\nset xtics 1\nset ytics 1\n"
          "set xlabel 'KV head'\nset ylabel 'layer'\nset cbrange [0:*]\n"
          "set palette defined (0 '#ffffff', 0.5 '#6baed6', 1 '#08306b')\nunset key\n",
          n_heads - 0.5, n_layers - 0.5);
      s += "set title 'induction'\nplot $S using 1:2:3 with image, $S using 1:2:5 with labels "
           "font ',10'\n";
      s += "set title 'echo'\nplot $S using 1:2:4 with image, $S using 1:2:6 with labels "
           "font ',10'\n";
      s += "unset multiplot\nunset output\n";
      run_gnuplot(s, {out}, "plot " + out.string());
      written.push_back(out);
    }
  }
  return written;
}

}  // namespace kvscope
