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

// One singular value of a layer's whole cache.
struct Value {
  double rank, frac, sv, cum;  // rank, rank / dim, singular value, cumulative energy
};
// tensor -> layer -> its values in rank order
using TensorCurves = std::map<std::string, std::map<int, std::vector<Value>>, TensorLess>;
using RunKey = std::pair<std::string, std::string>;  // (model, calibration)

std::map<RunKey, TensorCurves> read_curves(const fs::path& csv) {
  const CsvData d = read_csv(csv);
  const size_t c_model = d.column("model"), c_cal = d.column("calibration"),
               c_layer = d.column("layer"), c_tensor = d.column("tensor"),
               c_scope = d.column("scope"), c_dim = d.column("dim"), c_rank = d.column("rank"),
               c_cum = d.column("cumulative_energy"), c_sv = d.column("singular_value");
  std::map<RunKey, TensorCurves> curves;
  for (const auto& r : d.rows) {
    if (r[c_scope] != "layer") continue;
    const double rank = std::stod(r[c_rank]);
    curves[{r[c_model], r[c_cal]}][r[c_tensor]][std::stoi(r[c_layer])].push_back(
        {rank, rank / std::stod(r[c_dim]), std::stod(r[c_sv]), std::stod(r[c_cum])});
  }
  return curves;
}

// Tokens and centring per (model, calibration), from summary.csv beside the spectrum.
std::map<RunKey, std::string> read_how(const fs::path& csv) {
  std::map<RunKey, std::string> how;
  const fs::path summary = csv.parent_path() / "summary.csv";
  if (!fs::exists(summary)) return how;
  const CsvData sm = read_csv(summary);
  const size_t s_model = sm.column("model"), s_cal = sm.column("calibration"),
               s_tokens = sm.column("tokens"), s_centred = sm.column("centred");
  for (const auto& r : sm.rows)
    how[{r[s_model], r[s_cal]}] =
        fmt::format("{} tokens, {}", r[s_tokens],
                    r[s_centred] == "1" ? "centred (mean removed)" : "not centred");
  return how;
}

// gnuplot datablocks per tensor: $C_t, one index block per layer (cumulative curves);
// $E_t, a table of layer, top-25% energy, top-50% energy; $S_t, singular values over the
// layer's largest, one index block per layer.
std::string datablocks(const TensorCurves& tensors) {
  std::string data;
  for (const auto& [t, layers] : tensors) {
    data += "$C_" + t + " << EOD\n";
    for (const auto& [l, pts] : layers) {
      data += fmt::format("# layer {}\n0 0\n", l);
      for (const Value& v : pts) data += fmt::format("{:.6f} {:.6f}\n", v.frac, v.cum);
      data += "\n\n";
    }
    data += "EOD\n$E_" + t + " << EOD\n";
    for (const auto& [l, pts_l] : layers) {
      // A plain reference: C++20 lambdas may not capture structured bindings in clang 14.
      const auto& pts = pts_l;
      auto at = [&](double p) {  // cumulative energy of the first ceil(p * dim) values
        const size_t k = size_t(std::ceil(p * double(pts.size()) - 1e-9));
        return k == 0 ? 0.0 : pts[std::min(k, pts.size()) - 1].cum;
      };
      data += fmt::format("{} {:.6f} {:.6f}\n", l, at(0.25), at(0.5));
    }
    data += "EOD\n";
    // Exact zeros (a rank-deficient cache) have no place on a log axis and are left out.
    data += "$S_" + t + " << EOD\n";
    for (const auto& [l, pts] : layers) {
      double top = 0;
      for (const Value& v : pts) top = std::max(top, v.sv);
      data += fmt::format("# layer {}\n", l);
      for (const Value& v : pts)
        if (v.sv > 0 && top > 0) data += fmt::format("{:.0f} {:.9g}\n", v.rank, v.sv / top);
      data += "\n\n";
    }
    data += "EOD\n";
  }
  return data;
}

// The figures of one (model, calibration) run, each script starting with its datablocks.
struct SpectrumFigures {
  const TensorCurves& tensors;
  const std::string& title;
  std::vector<fs::path>& written;
  int n_layers = 0;
  const std::string data = datablocks(tensors);

  // One panel per tensor, one line per layer coloured by its index, from the datablocks
  // $BLOCK_TENSOR: the cumulative energy ($C) and the singular values ($S) figures.
  void layer_lines(const fs::path& out, const std::string& what, const std::string& axes,
                   const char* block, const char* term) {
    const bool key_per_layer = n_layers <= 8;
    std::string s = data + std::string(term) + "\n";
    s += fmt::format("set output '{}.partial'\n", out.string());
    s += fmt::format("set multiplot layout 1,{} title '{}: {}'\n", tensors.size(), title, what);
    s += axes;
    s += fmt::format(
        "set palette defined (0 '#440154', 0.5 '#21908d', 1 '#e8c32e')\n"
        "set cbrange [0:{}]\nset cblabel 'layer'\n",
        std::max(1, n_layers - 1));
    s += key_per_layer ? "unset colorbox\n" : "set colorbox\n";
    for (const auto& [t, layers] : tensors) {
      s += fmt::format("set title '{}'\n", kTensorTitle(t));
      s += fmt::format(
          "plot for [i=0:{}] ${}_{} index i using 1:2 with lines lw 2 lc palette cb i {}\n",
          layers.size() - 1, block, t, key_per_layer ? "title sprintf('layer %d', i)" : "notitle");
    }
    s += "unset multiplot\nunset output\n";
    run_gnuplot(s, {out}, "plot " + out.string());
    written.push_back(out);
  }

  // Top-25% / top-50% energy per layer.
  void energy_bars(const fs::path& bars, const char* term) {
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
};

}  // namespace

std::vector<fs::path> plot_spectrum(const fs::path& csv, const fs::path& out_dir) {
  const std::map<RunKey, TensorCurves> curves = read_curves(csv);
  const std::map<RunKey, std::string> how = read_how(csv);
  std::vector<fs::path> written;
  for (const auto& [key, tensors] : curves) {
    const std::string stem = file_safe(key.first) + "__" + file_safe(key.second);
    const auto h = how.find(key);
    const std::string title =
        key.first + " on " + key.second + (h == how.end() ? "" : " (" + h->second + ")");
    SpectrumFigures fig{tensors, title, written};
    for (const auto& [t, layers] : tensors)
      fig.n_layers = std::max(fig.n_layers, int(layers.size()));
    for (const auto& [ext, term] : kTerminals) {
      fig.layer_lines(out_dir / fmt::format("spectrum_{}.{}", stem, ext),
                      "cumulative energy of the KV cache (all KV heads of a layer together)",
                      "set xrange [0:1]\nset yrange [0:1.02]\nset grid\n"
                      "set xlabel 'fraction of singular values'\nset ylabel 'cumulative energy'\n"
                      "set key bottom right\n",
                      "C", term);
      // Normalised singular values on a log axis, the spectrum itself.
      fig.layer_lines(out_dir / fmt::format("singular_values_{}.{}", stem, ext),
                      "singular values of the KV cache over the largest (all KV heads of a "
                      "layer together; exact zeros left out)",
                      "set logscale y\nset format y '10^%L'\nset grid\nset autoscale xfix\n"
                      "set xlabel 'index of the singular value'\nset ylabel 'sigma_i / sigma_1'\n"
                      "set key bottom left\n",
                      "S", term);
      fig.energy_bars(out_dir / fmt::format("energy_{}.{}", stem, ext), term);
    }
  }
  return written;
}

}  // namespace kvscope
