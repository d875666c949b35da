// Spectrum figures of a `kv_spectrum` run: cumulative energy curves, the normalised
// singular values on a log axis, and top-k energy bars.
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

namespace {

const char* kTensorTitle(const std::string& t) {
  return t == "k_pre_rope" ? "K before RoPE" : t == "k" ? "K after RoPE" : "V";
}

// Panels left to right: K before RoPE, K after RoPE, V (the order of the paper's Fig. 1).
int tensor_order(const std::string& t) {
  return t == "k_pre_rope" ? 0 : t == "k" ? 1 : 2;
}
struct TensorLess {
  bool operator()(const std::string& a, const std::string& b) const {
    return tensor_order(a) != tensor_order(b) ? tensor_order(a) < tensor_order(b) : a < b;
  }
};

}  // namespace

std::vector<fs::path> plot_spectrum(const fs::path& csv, const fs::path& out_dir) {
  const CsvData d = read_csv(csv);
  const size_t c_model = d.column("model"), c_cal = d.column("calibration"),
               c_layer = d.column("layer"), c_tensor = d.column("tensor"),
               c_scope = d.column("scope"), c_dim = d.column("dim"), c_rank = d.column("rank"),
               c_cum = d.column("cumulative_energy"), c_sv = d.column("singular_value");
  // (model, calibration) -> tensor -> layer -> [(fraction of values, cumulative energy)]
  using Curves = std::map<
      std::pair<std::string, std::string>,
      std::map<std::string, std::map<int, std::vector<std::pair<double, double>>>, TensorLess>>;
  Curves curves;
  Curves values;  // the same keys -> [(rank, singular value)]
  for (const auto& r : d.rows) {
    if (r[c_scope] != "layer") continue;
    const double frac = std::stod(r[c_rank]) / std::stod(r[c_dim]);
    const int layer = std::stoi(r[c_layer]);
    curves[{r[c_model], r[c_cal]}][r[c_tensor]][layer].push_back({frac, std::stod(r[c_cum])});
    values[{r[c_model], r[c_cal]}][r[c_tensor]][layer].push_back(
        {std::stod(r[c_rank]), std::stod(r[c_sv])});
  }
  // Tokens and centring per (model, calibration), from summary.csv beside the spectrum.
  std::map<std::pair<std::string, std::string>, std::string> how;
  const fs::path summary = csv.parent_path() / "summary.csv";
  if (fs::exists(summary)) {
    const CsvData sm = read_csv(summary);
    const size_t s_model = sm.column("model"), s_cal = sm.column("calibration"),
                 s_tokens = sm.column("tokens"), s_centred = sm.column("centred");
    for (const auto& r : sm.rows)
      how[{r[s_model], r[s_cal]}] =
          fmt::format("{} tokens, {}", r[s_tokens],
                      r[s_centred] == "1" ? "centred (mean removed)" : "not centred");
  }
  std::vector<fs::path> written;
  for (const auto& [key, tensors] : curves) {
    const std::string stem = file_safe(key.first) + "__" + file_safe(key.second);
    const auto h = how.find(key);
    const std::string title =
        key.first + " on " + key.second + (h == how.end() ? "" : " (" + h->second + ")");
    int n_layers = 0;
    for (const auto& [t, layers] : tensors) n_layers = std::max(n_layers, int(layers.size()));
    // Datablocks: per tensor, one index block per layer (cumulative curves), and a table
    // of layer, top-25% energy, top-50% energy.
    std::string data;
    for (const auto& [t, layers] : tensors) {
      data += "$C_" + t + " << EOD\n";
      for (const auto& [l, pts] : layers) {
        data += fmt::format("# layer {}\n0 0\n", l);
        for (const auto& [x, y] : pts) data += fmt::format("{:.6f} {:.6f}\n", x, y);
        data += "\n\n";
      }
      data += "EOD\n$E_" + t + " << EOD\n";
      for (const auto& [l, pts_l] : layers) {
        // A plain reference: C++20 lambdas may not capture structured bindings in clang 14.
        const auto& pts = pts_l;
        auto at = [&](double p) {  // cumulative energy of the first ceil(p * dim) values
          const size_t k = size_t(std::ceil(p * double(pts.size()) - 1e-9));
          return k == 0 ? 0.0 : pts[std::min(k, pts.size()) - 1].second;
        };
        data += fmt::format("{} {:.6f} {:.6f}\n", l, at(0.25), at(0.5));
      }
      data += "EOD\n";
      // Singular values over the layer's largest, one index block per layer. Exact zeros
      // (a rank-deficient cache) have no place on a log axis and are left out.
      data += "$S_" + t + " << EOD\n";
      for (const auto& [l, pts_l] : values.at(key).at(t)) {
        double top = 0;
        for (const auto& p : pts_l) top = std::max(top, p.second);
        data += fmt::format("# layer {}\n", l);
        for (const auto& [rank, sv] : pts_l)
          if (sv > 0 && top > 0) data += fmt::format("{:.0f} {:.9g}\n", rank, sv / top);
        data += "\n\n";
      }
      data += "EOD\n";
    }
    const bool key_per_layer = n_layers <= 8;
    for (const auto& [ext, term] : kTerminals) {
      // Cumulative energy curves.
      const fs::path out = out_dir / fmt::format("spectrum_{}.{}", stem, ext);
      std::string s = data + std::string(term) + "\n";
      s += fmt::format("set output '{}.partial'\n", out.string());
      s += fmt::format(
          "set multiplot layout 1,{} title '{}: cumulative energy of the KV cache "
          "(all KV heads of a layer together)'\n",
          tensors.size(), title);
      s += "set xrange [0:1]\nset yrange [0:1.02]\nset grid\n"
           "set xlabel 'fraction of singular values'\nset ylabel 'cumulative energy'\n"
           "set key bottom right\n";
      s += fmt::format(
          "set palette defined (0 '#440154', 0.5 '#21908d', 1 '#e8c32e')\n"
          "set cbrange [0:{}]\nset cblabel 'layer'\n",
          std::max(1, n_layers - 1));
      s += key_per_layer ? "unset colorbox\n" : "set colorbox\n";
      for (const auto& [t, layers] : tensors) {
        s += fmt::format("set title '{}'\n", kTensorTitle(t));
        s += fmt::format(
            "plot for [i=0:{}] $C_{} index i using 1:2 with lines lw 2 lc palette cb i {}\n",
            layers.size() - 1, t, key_per_layer ? "title sprintf('layer %d', i)" : "notitle");
      }
      s += "unset multiplot\nunset output\n";
      run_gnuplot(s, {out}, "plot " + out.string());
      written.push_back(out);

      // Normalised singular values on a log axis, the spectrum itself.
      const fs::path sv = out_dir / fmt::format("singular_values_{}.{}", stem, ext);
      std::string v = data + std::string(term) + "\n";
      v += fmt::format("set output '{}.partial'\n", sv.string());
      v += fmt::format(
          "set multiplot layout 1,{} title '{}: singular values of the KV cache over the "
          "largest (all KV heads of a layer together; exact zeros left out)'\n",
          tensors.size(), title);
      v += "set logscale y\nset format y '10^%L'\nset grid\nset autoscale xfix\n"
           "set xlabel 'index of the singular value'\nset ylabel 'sigma_i / sigma_1'\n"
           "set key bottom left\n";
      v += fmt::format(
          "set palette defined (0 '#440154', 0.5 '#21908d', 1 '#e8c32e')\n"
          "set cbrange [0:{}]\nset cblabel 'layer'\n",
          std::max(1, n_layers - 1));
      v += key_per_layer ? "unset colorbox\n" : "set colorbox\n";
      for (const auto& [t, layers] : tensors) {
        v += fmt::format("set title '{}'\n", kTensorTitle(t));
        v += fmt::format(
            "plot for [i=0:{}] $S_{} index i using 1:2 with lines lw 2 lc palette cb i {}\n",
            layers.size() - 1, t, key_per_layer ? "title sprintf('layer %d', i)" : "notitle");
      }
      v += "unset multiplot\nunset output\n";
      run_gnuplot(v, {sv}, "plot " + sv.string());
      written.push_back(sv);

      // Top-25% / top-50% energy per layer.
      const fs::path bars = out_dir / fmt::format("energy_{}.{}", stem, ext);
      std::string b = data + std::string(term) + "\n";
      b += fmt::format("set output '{}.partial'\n", bars.string());
      b += fmt::format(
          "set multiplot layout 1,{} title '{}: energy held by the top 25% and top 50% of "
          "singular values, per layer'\n",
          tensors.size(), title);
      b += "set style data histograms\nset style histogram clustered gap 1\n"
           "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset yrange [0:1.18]\n"
           "set ytics 0,0.2,1\nset grid ytics\nset xlabel 'layer'\nset ylabel 'energy share'\n"
           "set key top left horizontal\n";
      for (const auto& [t, layers] : tensors) {
        b += fmt::format("set title '{}'\n", kTensorTitle(t));
        b += fmt::format(
            "plot $E_{0} using 2:xtic(1) title 'top 25%' lc rgb '#3b528b', "
            "$E_{0} using 3 title 'top 50%' lc rgb '#5ec962'\n",
            t);
      }
      b += "unset multiplot\nunset output\n";
      run_gnuplot(b, {bars}, "plot " + bars.string());
      written.push_back(bars);
    }
  }
  return written;
}

}  // namespace kvscope
