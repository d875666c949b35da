// Experiment kind `retrieval_heads` (paper B, Sec. 3): echo and induction scores of every
// head on the repeated-random-token probe, and the selected retrieval heads.
//
//   retrieval_heads:
//     block: 0               # tokens per random block; 0 = (L - 1) / repeats, L = the
//                            # context, at most 2048
//     repeats: 4             # copies of the block after BOS
//     probes: 1              # independent blocks (seeds seed, seed+1, ...), averaged
//     token_lo: -1           # ids from [token_lo, token_hi); -1 = past BOS/EOS
//     token_hi: 0            # 0 = vocabulary size
//     induction_share: 0.14  # top share of KV heads by induction score
//     echo_share: 0.01       # top share by echo score
//     induction_threshold: -1  # >= 0: select by absolute score instead of share
//     echo_threshold: -1
//     testbed: {...}         # the test bed's checks (experiments/testbed.hpp): testbed.csv
//
// Tables: scores.csv (per query head), heads.csv (per KV head: max over its query heads,
// ranks, selected or not, standard errors across probes, above_uniform: its induction or
// echo score exceeds the uniform level by more than 3 of them), summary.csv (per model, with
// uniform_score: what a head attending evenly to every visible token would score, the
// standard errors of the best scores and heads_above_uniform); plot: heads_MODEL.{png,svg}.
// With probes >= 2 only the rule's picks that are above uniform are marked retrieval heads;
// when none is, the run warns that it found none (stderr and manifest extra.warnings).
#include <numeric>

#include "experiments.hpp"
#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/report/plot.hpp"
#include "retrieval_config.hpp"
#include "task_config.hpp"
#include "testbed.hpp"

namespace kvscope {

ProbeOptions parse_probe_options(YamlMap& s) {
  ProbeOptions o;
  o.block = s.get_at_least_or<int>("block", 0, 0);
  o.repeats = s.get_at_least_or<int>("repeats", 2, o.repeats);
  o.probes = s.get_at_least_or<int>("probes", 1, o.probes);
  o.token_lo = s.get_at_least_or<int>("token_lo", -1, -1);
  o.token_hi = s.get_at_least_or<int>("token_hi", 0, 0);
  return o;
}

HeadSelection parse_head_selection(YamlMap& s) {
  HeadSelection h;
  h.induction_share = s.get_or<double>("induction_share", h.induction_share);
  h.echo_share = s.get_or<double>("echo_share", h.echo_share);
  h.induction_threshold = s.get_or<double>("induction_threshold", -1.0);
  h.echo_threshold = s.get_or<double>("echo_threshold", -1.0);
  for (double v : {h.induction_share, h.echo_share})
    KV_CHECK(v >= 0.0 && v <= 1.0, "{}: induction_share and echo_share must lie in [0, 1], got {}",
             s.file(), v);
  return h;
}

namespace {

struct RetrievalConfig {
  ProbeOptions probe;
  HeadSelection select;
  TestbedConfig testbed;
};

std::vector<int> ranks(const std::vector<double>& v) {  // 1 = highest; ties by index
  std::vector<int> order(v.size()), r(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return v[size_t(a)] > v[size_t(b)]; });
  for (size_t i = 0; i < order.size(); ++i) r[size_t(order[i])] = int(i) + 1;
  return r;
}

// The standard error of the best-scoring KV head's score (NaN with one probe).
double max_se(const std::vector<double>& score, const std::vector<double>& se) {
  const size_t i = size_t(std::max_element(score.begin(), score.end()) - score.begin());
  return i < se.size() ? se[i] : std::nan("");
}

struct RetrievalTables {
  Table scores{"scores",
               {{"model", Column::String},
                {"layer", Column::Int},
                {"head", Column::Int},
                {"kv_head", Column::Int},
                {"echo", Column::Float},
                {"induction", Column::Float}}};
  Table heads{"heads",
              {{"model", Column::String},
               {"layer", Column::Int},
               {"kv_head", Column::Int},
               {"echo", Column::Float},
               {"induction", Column::Float},
               {"echo_rank", Column::Int},
               {"induction_rank", Column::Int},
               {"retrieval", Column::Int},
               {"selected_by", Column::String},
               {"echo_se", Column::Float},
               {"induction_se", Column::Float},
               {"above_uniform", Column::Int}}};
  Table summary{"summary",
                {{"model", Column::String},
                 {"layers", Column::Int},
                 {"heads", Column::Int},
                 {"kv_heads", Column::Int},
                 {"block", Column::Int},
                 {"repeats", Column::Int},
                 {"probes", Column::Int},
                 {"token_lo", Column::Int},
                 {"token_hi", Column::Int},
                 {"retrieval_heads", Column::Int},
                 {"retrieval_share", Column::Float},
                 {"max_induction", Column::Float},
                 {"max_echo", Column::Float},
                 {"mean_induction", Column::Float},
                 {"mean_echo", Column::Float},
                 {"uniform_score", Column::Float},
                 {"max_induction_se", Column::Float},
                 {"max_echo_se", Column::Float},
                 {"heads_above_uniform", Column::Int}}};
};

// The test bed's twin and the models it is the twin of must be models of the config.
void check_twin_names(const RetrievalConfig& cfg, const ExperimentContext& ctx) {
  if (!cfg.testbed.on || cfg.testbed.twin.empty()) return;
  std::vector<std::string> names;
  for (const ModelSpec& ms : ctx.models) names.push_back(ms.name);
  for (const std::string& n : cfg.testbed.of)
    KV_CHECK(contains(names, n),
             "{}: retrieval_heads.testbed.twin.of names '{}', not a model of "
             "models: ({})",
             ctx.config_file.string(), n, fmt::join(names, ", "));
  KV_CHECK(contains(names, cfg.testbed.twin),
           "{}: retrieval_heads.testbed.twin.model '{}' is not a model of models: ({})",
           ctx.config_file.string(), cfg.testbed.twin, fmt::join(names, ", "));
}

// The heads marked as retrieval heads: the rule ranks every head, so it always picks some;
// with a noise estimate only the picks that stand out of the uniform level are marked.
// Says so when picks are dropped, or when there is no noise estimate.
std::vector<uint8_t> marked_heads(const std::vector<uint8_t>& picked, const HeadScores& s,
                                  const RetrievalEvidence& ev, double uniform,
                                  const std::string& model, ExperimentContext& ctx) {
  std::vector<uint8_t> sel = picked;
  if (ev.known)
    for (size_t i = 0; i < sel.size(); ++i) sel[i] = picked[i] && ev.above[i];
  const auto n_picked = std::count(picked.begin(), picked.end(), uint8_t(1));
  const auto n_kept = std::count(sel.begin(), sel.end(), uint8_t(1));
  if (ev.known && n_kept == 0) {
    ctx.warn(fmt::format(
        "{}: no retrieval heads found: none of the {} heads the selection rule ranks highest "
        "has an induction or echo score above the uniform level {:.5f} by more than 3 "
        "standard errors across the {} probes (best induction {:.5f}, {:.1f} SE from uniform; "
        "best echo {:.5f}, {:.1f} SE), so none is marked",
        model, n_picked, uniform, s.probes,
        *std::max_element(s.kv_induction.begin(), s.kv_induction.end()), ev.best_induction_z,
        *std::max_element(s.kv_echo.begin(), s.kv_echo.end()), ev.best_echo_z));
  } else if (ev.known && n_kept < n_picked) {
    ctx.log(
        fmt::format("{}: {} of the {} heads the rule picks are within noise of the "
                    "uniform level and not marked",
                    model, n_picked - n_kept, n_picked));
  } else if (!ev.known) {
    ctx.warn(
        fmt::format("{}: one probe: no noise estimate, so the {} heads the selection "
                    "rule picks may not stand out of the uniform level (set probes >= 2)",
                    model, n_picked));
  }
  return sel;
}

// scores.csv (per query head) and heads.csv (per KV head, with ranks and the rule that
// picked it); returns the number of marked heads and the mean echo and induction scores.
struct HeadTotals {
  int marked = 0;
  double mean_echo = 0, mean_induction = 0;
};

HeadTotals add_head_rows(RetrievalTables& t, const std::string& model, const ModelConfig& c,
                         const HeadScores& s, const HeadSelection& select,
                         const std::vector<uint8_t>& sel, const RetrievalEvidence& ev) {
  // Which rule picked each head, for the table: the selection with one rule switched off.
  HeadSelection only_ind = select, only_echo = select;
  only_ind.echo_share = 0, only_ind.echo_threshold = -1;
  only_echo.induction_share = 0, only_echo.induction_threshold = -1;
  const std::vector<uint8_t> by_ind = select_retrieval_heads(s, only_ind);
  const std::vector<uint8_t> by_echo = select_retrieval_heads(s, only_echo);
  for (int l = 0; l < c.n_layers; ++l)
    for (int h = 0; h < c.n_heads; ++h) {
      const size_t i = size_t(l) * c.n_heads + h;
      t.scores.add_row(
          {model, int64_t(l), int64_t(h), int64_t(h / c.group_size()), s.echo[i], s.induction[i]});
    }
  const std::vector<int> re = ranks(s.kv_echo), ri = ranks(s.kv_induction);
  HeadTotals out;
  for (int l = 0; l < c.n_layers; ++l)
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const size_t i = size_t(l) * c.n_kv_heads + g;
      const std::string why = by_ind[i] && by_echo[i] ? "both"
                              : by_ind[i]             ? "induction"
                              : by_echo[i]            ? "echo"
                                                      : "";
      t.heads.add_row({model, int64_t(l), int64_t(g), s.kv_echo[i], s.kv_induction[i],
                       int64_t(re[i]), int64_t(ri[i]), int64_t(sel[i]), why, s.kv_echo_se[i],
                       s.kv_induction_se[i], int64_t(ev.above.empty() ? 0 : ev.above[i])});
      out.mean_echo += s.kv_echo[i], out.mean_induction += s.kv_induction[i], out.marked += sel[i];
    }
  const int total = c.n_layers * c.n_kv_heads;
  out.mean_echo /= total, out.mean_induction /= total;
  return out;
}

Tables run_retrieval(const RetrievalConfig& cfg, ExperimentContext& ctx) {
  RetrievalTables t;
  Testbed testbed(cfg.testbed);
  check_twin_names(cfg, ctx);
  ctx.begin_units(int(ctx.models.size()));
  for (const ModelSpec& ms : ctx.models) {
    const LoadedModel lm = ctx.load(ms);
    const ModelConfig& c = lm.model.config;
    ProbeOptions po = cfg.probe;
    po.seed = ctx.seed;
    const ProbeSpec p = resolve_probe(lm.model, po, 0);
    std::vector<double> copy_nll;
    const HeadScores s = probe_heads(lm.model, po, cfg.testbed.on ? &copy_nll : nullptr);
    const std::vector<uint8_t> picked = select_retrieval_heads(s, cfg.select);
    const double uniform = uniform_score(p);
    const RetrievalEvidence ev = retrieval_evidence(s, uniform);
    const std::vector<uint8_t> sel = marked_heads(picked, s, ev, uniform, ms.name, ctx);
    const HeadTotals ht = add_head_rows(t, ms.name, c, s, cfg.select, sel, ev);
    if (cfg.testbed.on) testbed.measure(ctx, ms, lm, s, uniform, copy_nll);
    const int total = c.n_layers * c.n_kv_heads;
    t.summary.add_row({ms.name, int64_t(c.n_layers), int64_t(c.n_heads), int64_t(c.n_kv_heads),
                       int64_t(p.block), int64_t(p.repeats), int64_t(cfg.probe.probes),
                       int64_t(p.token_lo), int64_t(p.token_hi), int64_t(ht.marked),
                       double(ht.marked) / total,
                       *std::max_element(s.kv_induction.begin(), s.kv_induction.end()),
                       *std::max_element(s.kv_echo.begin(), s.kv_echo.end()), ht.mean_induction,
                       ht.mean_echo, uniform, max_se(s.kv_induction, s.kv_induction_se),
                       max_se(s.kv_echo, s.kv_echo_se), int64_t(ev.heads_above)});
    ctx.unit_done(fmt::format("{}: {} of {} KV heads are retrieval heads (block {}, {} probe(s))",
                              ms.name, ht.marked, total, p.block, cfg.probe.probes));
  }
  ctx.after_tables.push_back(
      [](const std::filesystem::path& dir) { plot_heads(dir / "heads.csv", dir); });
  if (cfg.testbed.on) return {t.scores, t.heads, t.summary, testbed.table()};
  return {t.scores, t.heads, t.summary};
}

}  // namespace

ExperimentKind retrieval_heads_kind() {
  ExperimentKind k;
  k.name = "retrieval_heads";
  k.summary = "echo and induction scores per head on a repeated random-token probe";
  k.needs_texts = false;
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    RetrievalConfig cfg;
    cfg.probe = parse_probe_options(s);
    cfg.select = parse_head_selection(s);
    if (s.has("testbed")) {
      YamlMap t = s.map("testbed");
      cfg.testbed = parse_testbed(t);
    }
    return [cfg](ExperimentContext& ctx) { return run_retrieval(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
