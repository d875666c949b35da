// Internal to results/REPORT.md: CSV rows by column name, the section type, and the
// sections of each paper (report_paper_a.cpp, report_paper_b.cpp).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kvscope/report/table.hpp"

namespace kvscope::report_detail {

namespace fs = std::filesystem;

// One CSV as rows of name -> value.
struct Rows {
  std::vector<std::map<std::string, std::string>> rows;
  bool ok = false;

  // Rows where every (column, value) of `where` matches.
  std::vector<const std::map<std::string, std::string>*> select(
      const std::map<std::string, std::string>& where) const {
    std::vector<const std::map<std::string, std::string>*> out;
    for (const auto& r : rows) {
      bool match = true;
      for (const auto& [k, v] : where) match &= r.count(k) && r.at(k) == v;
      if (match) out.push_back(&r);
    }
    return out;
  }
  std::optional<double> num(const std::map<std::string, std::string>& where,
                            const std::string& col) const {
    const auto s = select(where);
    if (s.empty() || !s[0]->count(col)) return std::nullopt;
    return std::stod(s[0]->at(col));
  }
  std::vector<std::string> distinct(const std::string& col) const {
    std::vector<std::string> out;
    for (const auto& r : rows)
      if (r.count(col) && std::find(out.begin(), out.end(), r.at(col)) == out.end())
        out.push_back(r.at(col));
    return out;
  }
};

inline Rows load(const fs::path& csv) {
  Rows r;
  if (!fs::exists(csv)) return r;
  const CsvData d = read_csv(csv);
  for (const auto& row : d.rows) {
    std::map<std::string, std::string> m;
    for (size_t i = 0; i < d.header.size(); ++i) m[d.header[i]] = row[i];
    r.rows.push_back(std::move(m));
  }
  r.ok = true;
  return r;
}

// The rows of several runs of one kind (the shipped GQA models and kvscope's MHA ones).
inline Rows load_all(const fs::path& root, std::initializer_list<const char*> names,
                     const std::string& csv) {
  Rows all;
  for (const char* n : names) {
    Rows r = load(root / n / csv);
    all.ok |= r.ok;
    for (auto& row : r.rows) all.rows.push_back(std::move(row));
  }
  return all;
}

inline std::string f(std::optional<double> v, const char* spec = "{:.2f}") {
  return v ? fmt::format(fmt::runtime(spec), *v) : std::string("-");
}

// Markdown image links for the PNGs of results/NAME whose names start with `prefix`.
inline std::string plots(const fs::path& root, const std::string& name, const std::string& prefix) {
  std::vector<std::string> files;
  if (fs::exists(root / name))
    for (const auto& e : fs::directory_iterator(root / name)) {
      const std::string fn = e.path().filename().string();
      if (fn.rfind(prefix, 0) == 0 && e.path().extension() == ".png") files.push_back(fn);
    }
  std::sort(files.begin(), files.end());
  std::string out;
  for (const std::string& fn : files) out += fmt::format("![{}]({}/{})\n", fn, name, fn);
  return out.empty() ? out : fmt::format("\n{}", out);
}

struct Section {
  std::string id, paper_table, verdict, body;
};

inline const char* kReproduced = "reproduced in kind";
inline const char* kDiffers = "differs";
inline const char* kNotApplicable = "not applicable here";

inline std::string not_run(const std::string& name) {
  return fmt::format("`results/{}/` is missing: run `kvscope tables --only {}`.", name, name);
}

// A paired difference between two policies of a kv_cache_policies run (paired.csv): the
// means of `reference` and `policy` over the items both scored, policy - reference and the
// standard error of the per-item difference.
struct Paired {
  double reference = 0, policy = 0, diff = 0, se = 0, items = 0;
};
// The pair (model, task, reference, policy) of paired.csv, or its reverse negated.
std::optional<Paired> paired(const Rows& p, const std::string& model, const std::string& task,
                             const std::string& reference, const std::string& policy);
// "+0.012 ± 0.004"
std::string signed_pm(const Paired& d);
// The needle-style tasks (passkey, multikey, recall, copy) a model was scored on.
std::vector<std::string> needle_tasks(const Rows& p, const std::string& model);
// `base` and its random draws (base#1, base#2, ...) among a model's policies.
std::vector<std::string> draws_of(const Rows& policies, const std::string& model,
                                  const std::string& base);
// "a, b, c" ("none" when empty).
std::string tasks_word(const std::vector<std::string>& t);

// Paper A (report_paper_a.cpp).
Section energy(const fs::path& root);
Section table4(const fs::path& root);
Section after_training(const fs::path& root);
Section calibration(const fs::path& root);
Section decode_speed(const fs::path& root);
// Paper B (report_paper_b.cpp).
Section heads(const fs::path& root);
Section longbench(const fs::path& root);
Section ablation(const fs::path& root);
Section echo_comp(const fs::path& root);
Section compression(const fs::path& root);
// Beyond the papers (report_beyond.cpp).
Section detector(const fs::path& root);
Section reduction_circuit(const fs::path& root);
// The eviction frontier (report_frontier.cpp).
Section frontier(const fs::path& root);

}  // namespace kvscope::report_detail
