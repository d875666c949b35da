// The controls of kv_cache_policies (issue 35): several probe seeds (does the selection
// hold?), pairs of policies on the same items (paired differences and their standard
// errors), and the names of random-head draws.
#pragma once

#include <string>
#include <vector>

#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/report/table.hpp"

namespace kvscope {

// Draw k (0-based) of a random-head policy: `base` itself when there is one draw, else
// base#1, base#2, ...: the report groups a policy's draws by the text before '#'.
std::string draw_name(const std::string& base, int k, int draws);

// The probe split by seed: probe seed k is the probes [k P, (k + 1) P) of a pooled probe of
// K P probes (probe i uses seed + i), so the pooled scores are the seeds' together.
struct ProbeSeeds {
  HeadScores pooled;
  std::vector<HeadScores> per_seed;  // [K]
  double uniform = 0;
};
ProbeSeeds probe_by_seed(const Model& m, const ProbeOptions& o, int seeds);

// probes.csv (every KV head's scores per probe seed, -1 = pooled) and selections.csv (per
// induction share, the heads each seed's probe selects and their Jaccard overlap with the
// pooled selection, which the policies use).
Table probe_seed_table();
Table selection_table();
void add_probe_rows(Table& t, const std::string& model, const ProbeSeeds& p);
void add_selection_rows(Table& t, const std::string& model, const ProbeSeeds& p,
                        const std::vector<double>& induction_shares, double echo_share);

// Items of every task, for paired differences between any two policies.
class PairedItems {
 public:
  explicit PairedItems(std::vector<std::string> policies) : policies_(std::move(policies)) {}
  // values: [items x policies] row-major, NaN where a policy is out of reach.
  void add(const std::string& task, const std::vector<double>& values);
  // paired.csv rows of `model`: for each reference policy and task, every other policy's
  // mean difference (policy - reference) over the items both scored, and its standard
  // error (sd of the differences / sqrt(items)).
  void write(Table& t, const std::string& model, const std::vector<std::string>& references) const;
  static Table table();

 private:
  std::vector<std::string> policies_;
  std::vector<std::string> tasks_;           // in order of first add
  std::vector<std::vector<double>> values_;  // per task, rows appended
};

}  // namespace kvscope
