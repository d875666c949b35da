#include "policy_controls.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace kvscope {

std::string draw_name(const std::string& base, int k, int draws) {
  return draws <= 1 ? base : fmt::format("{}#{}", base, k + 1);
}

namespace {

HeadScores probe_seed(const Model& m, const ProbeOptions& o, int k) {
  ProbeOptions one = o;
  one.seed = o.seed + uint64_t(k) * uint64_t(o.probes);
  return probe_heads(m, one);
}

std::string head_list(const std::vector<uint8_t>& sel, int n_kv) {
  std::string out;
  for (size_t i = 0; i < sel.size(); ++i)
    if (sel[i]) out += fmt::format("{}{}.{}", out.empty() ? "" : " ", int(i) / n_kv, int(i) % n_kv);
  return out;
}

}  // namespace

ProbeSeeds probe_by_seed(const Model& m, const ProbeOptions& o, int seeds) {
  ProbeSeeds p;
  ProbeOptions all = o;
  all.probes = o.probes * seeds;
  p.pooled = probe_heads(m, all);
  for (int k = 0; k < seeds; ++k) p.per_seed.push_back(probe_seed(m, o, k));
  p.uniform = uniform_score(resolve_probe(m, o, 0));
  return p;
}

Table probe_seed_table() {
  return Table("probes", {{"model", Column::String},
                          {"probe_seed", Column::Int},
                          {"layer", Column::Int},
                          {"kv_head", Column::Int},
                          {"induction", Column::Float},
                          {"induction_se", Column::Float},
                          {"echo", Column::Float},
                          {"echo_se", Column::Float},
                          {"uniform", Column::Float}});
}

Table selection_table() {
  return Table("selections", {{"model", Column::String},
                              {"induction_share", Column::Float},
                              {"probe_seed", Column::Int},
                              {"heads", Column::String},
                              {"count", Column::Int},
                              {"same_as_pooled", Column::Int},
                              {"jaccard", Column::Float}});
}

void add_probe_rows(Table& t, const std::string& model, const ProbeSeeds& p) {
  auto rows = [&](const HeadScores& s, int seed) {
    for (int l = 0; l < s.n_layers; ++l)
      for (int g = 0; g < s.n_kv_heads; ++g) {
        const size_t i = size_t(l) * s.n_kv_heads + g;
        t.add_row({model, int64_t(seed), int64_t(l), int64_t(g), s.kv_induction[i],
                   s.kv_induction_se[i], s.kv_echo[i], s.kv_echo_se[i], p.uniform});
      }
  };
  rows(p.pooled, -1);
  for (size_t k = 0; k < p.per_seed.size(); ++k) rows(p.per_seed[k], int(k));
}

void add_selection_rows(Table& t, const std::string& model, const ProbeSeeds& p,
                        const std::vector<double>& induction_shares, double echo_share) {
  for (double share : induction_shares) {
    HeadSelection sel;
    sel.induction_share = share, sel.echo_share = echo_share;
    const std::vector<uint8_t> pooled = select_retrieval_heads(p.pooled, sel);
    auto row = [&](const HeadScores& s, int seed) {
      const std::vector<uint8_t> h = select_retrieval_heads(s, sel);
      int both = 0, either = 0;
      for (size_t i = 0; i < h.size(); ++i) both += h[i] && pooled[i], either += h[i] || pooled[i];
      t.add_row({model, share, int64_t(seed), head_list(h, s.n_kv_heads),
                 int64_t(std::count(h.begin(), h.end(), 1)), int64_t(h == pooled),
                 either ? double(both) / either : 1.0});
    };
    row(p.pooled, -1);
    for (size_t k = 0; k < p.per_seed.size(); ++k) row(p.per_seed[k], int(k));
  }
}

void PairedItems::add(const std::string& task, const std::vector<double>& values) {
  auto it = std::find(tasks_.begin(), tasks_.end(), task);
  if (it == tasks_.end()) {
    tasks_.push_back(task);
    values_.emplace_back();
    it = tasks_.end() - 1;
  }
  std::vector<double>& v = values_[size_t(it - tasks_.begin())];
  v.insert(v.end(), values.begin(), values.end());
}

Table PairedItems::table() {
  return Table("paired", {{"model", Column::String},
                          {"task", Column::String},
                          {"reference", Column::String},
                          {"policy", Column::String},
                          {"items", Column::Int},
                          {"reference_mean", Column::Float},
                          {"policy_mean", Column::Float},
                          {"difference", Column::Float},
                          {"difference_se", Column::Float}});
}

void PairedItems::write(Table& t, const std::string& model,
                        const std::vector<std::string>& references) const {
  const size_t np = policies_.size();
  for (const std::string& ref : references) {
    const auto r_at = std::find(policies_.begin(), policies_.end(), ref);
    if (r_at == policies_.end()) continue;
    const size_t r = size_t(r_at - policies_.begin());
    for (size_t ti = 0; ti < tasks_.size(); ++ti) {
      const std::vector<double>& v = values_[ti];
      const size_t n_items = v.size() / np;
      for (size_t p = 0; p < np; ++p) {
        if (p == r) continue;
        double sa = 0, sb = 0, sd = 0, sdd = 0;
        int64_t n = 0;
        for (size_t i = 0; i < n_items; ++i) {
          const double a = v[i * np + r], b = v[i * np + p];
          if (std::isnan(a) || std::isnan(b)) continue;
          ++n, sa += a, sb += b, sd += b - a, sdd += (b - a) * (b - a);
        }
        if (n == 0) continue;
        const double mean = sd / double(n);
        const double se = n < 2 ? NAN
                                : std::sqrt(std::max(0.0, sdd / double(n) - mean * mean) *
                                            double(n) / double(n - 1) / double(n));
        t.add_row(
            {model, tasks_[ti], ref, policies_[p], n, sa / double(n), sb / double(n), mean, se});
      }
    }
  }
}

}  // namespace kvscope
