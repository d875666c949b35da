#include "kvscope/report/plot.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "kvscope/io/error.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

using plot_detail::kTerminals;

namespace fs = std::filesystem;

std::string file_safe(const std::string& s) {
  std::string o;
  for (char c : s)
    o += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ? c : '_';
  return o;
}

void run_gnuplot(const std::string& script, const std::vector<fs::path>& outputs,
                 const std::string& what) {
  const fs::path err =
      fs::temp_directory_path() / ("kvscope_gnuplot_" + std::to_string(::getpid()) + ".err");
  const std::string cmd = "gnuplot 2>'" + err.string() + "'";
  std::FILE* p = ::popen(cmd.c_str(), "w");
  KV_CHECK(p != nullptr, "{}: cannot start gnuplot", what);
  std::fwrite(script.data(), 1, script.size(), p);
  const int status = ::pclose(p);
  std::string msg;
  try {
    msg = read_file_bytes(err);
  } catch (const Error&) {
  }
  std::error_code ec;
  fs::remove(err, ec);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto partial = [](const fs::path& f) {
    fs::path q = f;
    q += ".partial";
    return q;
  };
  if (code != 0) {
    for (const fs::path& f : outputs) fs::remove(partial(f), ec);
    KV_CHECK(code != 127, "{}: gnuplot is not installed (Debian: apt-get install gnuplot-nox)",
             what);
    throw Error(fmt::format("{}: gnuplot failed (exit {}): {}", what, code, msg));
  }
  for (const fs::path& f : outputs) {
    KV_CHECK(fs::exists(partial(f)), "{}: gnuplot did not write {}", what, partial(f).string());
    fs::rename(partial(f), f, ec);
    KV_CHECK(!ec, "{}: cannot rename {}: {}", what, partial(f).string(), ec.message());
  }
}

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
               c_cum = d.column("cumulative_energy");
  // (model, calibration) -> tensor -> layer -> [(fraction of values, cumulative energy)]
  std::map<std::pair<std::string, std::string>,
           std::map<std::string, std::map<int, std::vector<std::pair<double, double>>>, TensorLess>>
      curves;
  for (const auto& r : d.rows) {
    if (r[c_scope] != "layer") continue;
    const double frac = std::stod(r[c_rank]) / std::stod(r[c_dim]);
    curves[{r[c_model], r[c_cal]}][r[c_tensor]][std::stoi(r[c_layer])].push_back(
        {frac, std::stod(r[c_cum])});
  }
  std::vector<fs::path> written;
  for (const auto& [key, tensors] : curves) {
    const std::string stem = file_safe(key.first) + "__" + file_safe(key.second);
    const std::string title = key.first + " on " + key.second;
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
      for (const auto& [l, pts] : layers) {
        auto at = [&](double p) {  // cumulative energy of the first ceil(p * dim) values
          const size_t k = size_t(std::ceil(p * double(pts.size()) - 1e-9));
          return k == 0 ? 0.0 : pts[std::min(k, pts.size()) - 1].second;
        };
        data += fmt::format("{} {:.6f} {:.6f}\n", l, at(0.25), at(0.5));
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
           "set key outside right top vertical\nset yrange [*:*]\n";
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
