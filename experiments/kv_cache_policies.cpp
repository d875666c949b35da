// Experiment kind `kv_cache_policies` (paper B, Sec. 4 in kind): retrieval heads from the
// probe, then every cache policy scored on copy, name recall and long-text perplexity,
// with the share of the KV cache each one keeps. `texts:` are the perplexity texts.
//
//   kv_cache_policies:
//     policies: [full, streaming, razor, razor_no_comp, razor_no_echo, razor_random, h2o]
//                                # also ablate_retrieval, ablate_random (the detector's check)
//     induction_shares: [0.14]  # one razor family per share (the protected-head ablation)
//     echo_share: 0.01
//     n_sink: 4                 # N0
//     s0: 32                    # razor keeps max(s0, N / c) recent tokens
//     c: 5
//     probe: {}                 # retrieval_heads' probe keys: block, repeats, probes, ...
//     probe_seeds: 1            # probes in K seeds of `probes` each; the policies use them
//                               # pooled, selections.csv says whether each seed agrees
//     random_draws: 1           # draws of razor_random / ablate_random (name#k when > 1)
//     tasks: [copy, recall, perplexity]   # also passkey, multikey
//     filler: {path: ...}       # natural text for the copy and recall contexts
//     copy: {context: 0, segment: 32, depths: [0.1, 0.5], trials: 8}
//     recall: {lengths: [], depths: [0, 0.25, 0.5, 0.75, 1], names: [...], needle: ...,
//              cue: Then, trials: 4}
//     passkey: {lengths: [], depths: [0, 0.25, 0.5, 0.75, 1], key: 16, token_lo: -1,
//               token_hi: 0, trials: 8}  # task passkey: the needle test with random ids
//     multikey: {keys: [2, 3, 4], ... as passkey}  # task multikey: one asked of K passkeys
//     perplexity: {window: 0, prefill: 0.75, windows: 16}
#include <chrono>
#include <nlohmann/json.hpp>

#include "experiments.hpp"
#include "kvscope/kv/policy_eval.hpp"
#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "policy_controls.hpp"
#include "retrieval_config.hpp"
#include "task_config.hpp"

namespace kvscope {

namespace {

const std::vector<std::string> kPolicies = {
    "full", "streaming", "razor", "razor_no_comp", "razor_no_echo", "razor_random", "h2o"};
// The detector's check by intervention, not in the default list: razor turned inside out.
// ablate_retrieval masks the far context of the heads razor protects (they keep only sinks
// and the recent window, no compensation) and leaves every other head whole; ablate_random
// does the same to as many heads drawn at random from the others. If the probe found the heads that
// copy, the first breaks copying and the second does not.
const std::vector<std::string> kAblations = {"ablate_retrieval", "ablate_random"};

// As many heads as `heads` selects, drawn at random from the heads it does not select (the
// control of ablate_retrieval must not ablate a selected head by chance: with 8 KV heads,
// 3 random ones miss 3 selected ones only 18% of the time). All of them when too few remain.
std::vector<uint8_t> others_at_random(const std::vector<uint8_t>& heads, uint64_t seed) {
  std::vector<size_t> others;
  for (size_t i = 0; i < heads.size(); ++i)
    if (!heads[i]) others.push_back(i);
  const int count = int(std::count(heads.begin(), heads.end(), 1));
  const std::vector<uint8_t> pick =
      random_heads(int(others.size()), std::min(count, int(others.size())), seed);
  std::vector<uint8_t> out(heads.size(), 0);
  for (size_t j = 0; j < others.size(); ++j) out[others[j]] = pick[j];
  return out;
}

std::vector<uint8_t> complement(std::vector<uint8_t> v) {
  for (uint8_t& x : v) x = x ? 0 : 1;
  return v;
}

struct PoliciesConfig {
  std::vector<std::string> policies = kPolicies;
  std::vector<double> induction_shares = {0.14};
  double echo_share = 0.01;
  PolicyParams params;
  ProbeOptions probe;
  int probe_seeds = 1;
  int random_draws = 1;
  std::vector<std::string> tasks = {"copy", "recall", "perplexity"};
  TextSpec filler;
  bool has_filler = false;
  CopyTask copy;
  RecallTask recall;
  PasskeyTask passkey;
  PasskeyTask multikey;
  std::vector<int> multikey_keys = {2, 3, 4};
  PerplexityTask ppl;
};

struct Family {
  std::vector<PolicySpec> specs;
  std::vector<double> shares;  // induction share of each spec (-1: not a razor-family policy)
  // The policies paired.csv pairs every other one with: full, and razor, ablate_retrieval
  // and streaming at each share.
  std::vector<std::string> references;
};

// The policies of one model: full once, every other policy once per induction share.
Family build_policies(const PoliciesConfig& cfg, const HeadScores& s, uint64_t seed) {
  Family f;
  const int total = s.n_layers * s.n_kv_heads;
  for (size_t si = 0; si < cfg.induction_shares.size(); ++si) {
    HeadSelection sel;
    sel.induction_share = cfg.induction_shares[si];
    sel.echo_share = cfg.echo_share;
    const std::vector<uint8_t> heads = select_retrieval_heads(s, sel);
    HeadSelection ind_only = sel;
    ind_only.echo_share = 0.0;
    const int count = int(std::count(heads.begin(), heads.end(), 1));
    const std::string suffix =
        cfg.induction_shares.size() > 1 ? fmt::format("@{:g}%", 100 * sel.induction_share) : "";
    for (const std::string& name : cfg.policies) {
      if (name == "full" && si > 0) continue;
      const bool drawn = name == "razor_random" || name == "ablate_random";
      for (int k = 0; k < (drawn ? cfg.random_draws : 1); ++k) {
        // Draw 0 keeps the seed of a single draw; the others step by a large odd number.
        const uint64_t draw_seed = seed + si + uint64_t(k) * 7919u;
        PolicySpec p;
        p.name = name == "full" ? name : draw_name(name + suffix, k, drawn ? cfg.random_draws : 1);
        p.budget_heads = heads;
        p.protected_heads = heads;
        if (name == "full") p.kind = PolicyKind::kFull;
        if (name == "streaming") p.kind = PolicyKind::kStreaming;
        if (name == "h2o") p.kind = PolicyKind::kH2O;
        if (name.rfind("razor", 0) == 0) p.kind = PolicyKind::kRazor;
        if (name == "razor_no_comp") p.compensation = false;
        if (name == "razor_no_echo") p.protected_heads = select_retrieval_heads(s, ind_only);
        if (name == "razor_random") p.protected_heads = random_heads(total, count, draw_seed);
        if (name.rfind("ablate", 0) == 0) {
          p.kind = PolicyKind::kRazor, p.compensation = false;
          p.protected_heads =
              complement(name == "ablate_retrieval" ? heads : others_at_random(heads, draw_seed));
        }
        if (name == "full" || name == "razor" || name == "ablate_retrieval" || name == "streaming")
          f.references.push_back(p.name);
        f.specs.push_back(p);
        f.shares.push_back(name == "full" ? -1.0 : sel.induction_share);
      }
    }
  }
  return f;
}

// The tasks a config asks for.
struct Wants {
  bool copy, recall, ppl, passkey, multikey;
  explicit Wants(const std::vector<std::string>& tasks)
      : copy(contains(tasks, "copy")),
        recall(contains(tasks, "recall")),
        ppl(contains(tasks, "perplexity")),
        passkey(contains(tasks, "passkey")),
        multikey(contains(tasks, "multikey")) {}
  bool filler() const { return copy || recall || passkey || multikey; }
};

// Every table the kind writes (those of tasks not run stay empty and are not written).
struct PolicyTables {
  Table main{"policies",
             {{"model", Column::String},
              {"policy", Column::String},
              {"induction_share", Column::Float},
              {"protected_heads", Column::Int},
              {"kv_heads", Column::Int},
              {"context", Column::Int},
              {"kv_bytes", Column::Int},
              {"full_kv_bytes", Column::Int},
              {"kv_share", Column::Float},
              {"copy_accuracy", Column::Float},
              {"recall_accuracy", Column::Float},
              {"passkey_accuracy", Column::Float},
              {"multikey_accuracy", Column::Float},
              {"perplexity", Column::Float}}};
  Table copy{"copy",
             {{"model", Column::String},
              {"policy", Column::String},
              {"depth", Column::Float},
              {"context", Column::Int},
              {"segment", Column::Int},
              {"predictions", Column::Int},
              {"accuracy", Column::Float},
              {"baseline_accuracy", Column::Float},
              {"kv_share", Column::Float}}};
  Table recall{"recall",
               {{"model", Column::String},
                {"policy", Column::String},
                {"length", Column::Int},
                {"depth", Column::Float},
                {"questions", Column::Int},
                {"accuracy", Column::Float},
                {"chance", Column::Float},
                {"mean_rank", Column::Float},
                {"kv_share", Column::Float}}};
  Table passkey{"passkey",
                {{"model", Column::String},
                 {"policy", Column::String},
                 {"length", Column::Int},
                 {"depth", Column::Float},
                 {"passkeys", Column::Int},
                 {"predictions", Column::Int},
                 {"accuracy", Column::Float},
                 {"exact", Column::Float},
                 {"chance", Column::Float},
                 {"kv_share", Column::Float}}};
  Table multikey{"multikey",
                 {{"model", Column::String},
                  {"policy", Column::String},
                  {"keys", Column::Int},
                  {"length", Column::Int},
                  {"depth", Column::Float},
                  {"passkeys", Column::Int},
                  {"predictions", Column::Int},
                  {"accuracy", Column::Float},
                  {"exact", Column::Float},
                  {"chance", Column::Float},
                  {"kv_share", Column::Float}}};
  Table ppl{"perplexity",
            {{"model", Column::String},
             {"policy", Column::String},
             {"text", Column::String},
             {"window", Column::Int},
             {"prefill", Column::Int},
             {"predictions", Column::Int},
             {"mean_nll", Column::Float},
             {"perplexity", Column::Float},
             {"kv_share", Column::Float}}};
  // induction_x / echo_x: the head's pooled probe scores over the uniform level, so that
  // a random draw's composition (how many induction heads it holds) can be counted.
  Table prot{"protected",
             {{"model", Column::String},
              {"policy", Column::String},
              {"layer", Column::Int},
              {"kv_head", Column::Int},
              {"induction_x", Column::Float},
              {"echo_x", Column::Float}}};
  Table probes = probe_seed_table(), selections = selection_table(), paired = PairedItems::table();

  Tables written(const Wants& want) const {
    Tables out{main, prot, probes, selections, paired};
    if (want.copy) out.push_back(copy);
    if (want.recall) out.push_back(recall);
    if (want.passkey) out.push_back(passkey);
    if (want.multikey) out.push_back(multikey);
    if (want.ppl) out.push_back(ppl);
    return out;
  }
};

// One model scored: its policies on every task asked for, each task's rows added to the
// tables, each policy's mean accuracy (NaN for a task not run) kept for policies.csv.
struct ModelScoring {
  const PoliciesConfig& cfg;
  ExperimentContext& ctx;
  PolicyTables& t;
  const std::string& model;
  const LoadedModel& lm;
  const Family& fam;
  const TaskVariants& tv;
  const std::vector<int32_t>& filler;
  PairedItems& items;
  const Model& m = lm.model;
  const ModelConfig& c = m.config;
  const size_t np = fam.specs.size();
  std::vector<double> copy_acc = std::vector<double>(np, NAN), recall_acc = copy_acc,
                      passkey_acc = copy_acc, multikey_acc = copy_acc, ppl_first = copy_acc;

  const std::string& policy(size_t i) const { return fam.specs[i].name; }

  void copy() {
    std::vector<std::vector<double>> copy_items;
    const auto r = run_copy(m, filler, cfg.copy, tv, &copy_items);
    for (const auto& v : copy_items) items.add("copy", v);
    const int L = copy_context(cfg.copy, c);
    std::fill(copy_acc.begin(), copy_acc.end(), 0.0);
    for (size_t d = 0; d < r.size(); ++d)
      for (size_t i = 0; i < np; ++i) {
        t.copy.add_row({model, policy(i), cfg.copy.depths[d], int64_t(L), int64_t(cfg.copy.segment),
                        r[d][i].count, r[d][i].score, r[d][i].aux, r[d][i].kv_share});
        copy_acc[i] += r[d][i].score / double(r.size());
      }
  }

  void recall() {
    const auto r = run_recall(m, *lm.tokenizer, filler, cfg.recall, tv);
    std::fill(recall_acc.begin(), recall_acc.end(), 0.0);
    KV_CHECK(!r.empty(), "{}: no recall length fits model {} (context {})",
             ctx.config_file.string(), model, c.max_seq_len);
    for (const RecallCell& cell : r) {
      items.add("recall", cell.items);
      for (size_t i = 0; i < np; ++i) {
        const TaskScore& sc = cell.scores[i];
        t.recall.add_row({model, policy(i), int64_t(cell.length), cell.depth, sc.count, sc.score,
                          1.0 / double(cfg.recall.names.size()), sc.aux, sc.kv_share});
        recall_acc[i] += sc.score / double(r.size());
      }
    }
  }

  void passkey() {
    PasskeyTask pt = cfg.passkey;
    pt.seed = ctx.seed;
    const auto r = run_passkey(m, filler, pt, tv);
    KV_CHECK(!r.empty(), "{}: no passkey length fits model {} (context {})",
             ctx.config_file.string(), model, c.max_seq_len);
    const auto [lo, hi] = passkey_ids(pt, c);
    std::fill(passkey_acc.begin(), passkey_acc.end(), 0.0);
    for (const RecallCell& cell : r) {
      items.add("passkey", cell.items);
      for (size_t i = 0; i < np; ++i) {
        const TaskScore& sc = cell.scores[i];
        t.passkey.add_row({model, policy(i), int64_t(cell.length), cell.depth, int64_t(pt.trials),
                           sc.count, sc.score, sc.aux, 1.0 / double(hi - lo - pt.key),
                           sc.kv_share});
        passkey_acc[i] += sc.score / double(r.size());
      }
    }
  }

  void multikey() {
    std::vector<RecallCell> all;
    std::vector<int> keys_of;
    for (int k : cfg.multikey_keys) {
      PasskeyTask pt = cfg.multikey;
      pt.seed = ctx.seed + uint64_t(k) * 1000003u;  // other passkeys than the passkey task's
      pt.distractors = k - 1;
      for (RecallCell& cell : run_passkey(m, filler, pt, tv)) {
        items.add(fmt::format("multikey{}", k), cell.items);
        items.add("multikey", cell.items);
        all.push_back(std::move(cell));
        keys_of.push_back(k);
      }
    }
    KV_CHECK(!all.empty(), "{}: no multikey length fits model {} (context {})",
             ctx.config_file.string(), model, c.max_seq_len);
    const auto [lo, hi] = passkey_ids(cfg.multikey, c);
    std::fill(multikey_acc.begin(), multikey_acc.end(), 0.0);
    for (size_t ci = 0; ci < all.size(); ++ci)
      for (size_t i = 0; i < np; ++i) {
        const TaskScore& sc = all[ci].scores[i];
        t.multikey.add_row({model, policy(i), int64_t(keys_of[ci]), int64_t(all[ci].length),
                            all[ci].depth, int64_t(cfg.multikey.trials), sc.count, sc.score, sc.aux,
                            1.0 / double(hi - lo - cfg.multikey.key), sc.kv_share});
        multikey_acc[i] += sc.score / double(all.size());
      }
  }

  void perplexity(size_t ti) {
    const TextSpec& ts = ctx.texts[ti];
    const std::vector<int32_t> stream =
        without_bos(token_stream(*lm.tokenizer, ctx.documents(ts)), c.bos_id);
    std::vector<double> ppl_items;
    const auto r = run_policy_perplexity(m, stream, cfg.ppl, tv, &ppl_items);
    items.add("nll_" + ts.name, ppl_items);
    const int L = perplexity_window(cfg.ppl, c);
    const int P = perplexity_prefill(cfg.ppl, L);
    for (size_t i = 0; i < np; ++i) {
      t.ppl.add_row({model, policy(i), ts.name, int64_t(L), int64_t(P), r[i].count, r[i].aux,
                     r[i].score, r[i].kv_share});
      if (ti == 0) ppl_first[i] = r[i].score;
    }
  }

  // policies.csv: each policy's share of the cache kept after a prefill of the whole
  // context (what the tasks' own kv_share columns measure at their lengths) beside its
  // mean accuracies.
  void main_rows() {
    const int N = c.max_seq_len;
    const int total = c.n_layers * c.n_kv_heads;
    const int64_t per_slot = int64_t(2) * c.head_dim * int64_t(sizeof(float));  // K and V
    for (size_t i = 0; i < np; ++i) {
      const CachePolicy cp = resolve_policy(fam.specs[i], cfg.params, N);
      int64_t kept = 0;
      for (int h = 0; h < total; ++h)
        kept += kept_slots(cp, N, cp.kind == PolicyKind::kRazor && cp.protected_heads[size_t(h)]);
      const int protected_heads =
          cp.kind == PolicyKind::kRazor
              ? int(std::count(cp.protected_heads.begin(), cp.protected_heads.end(), 1))
          : cp.kind == PolicyKind::kFull ? total
                                         : 0;
      t.main.add_row({model, policy(i), fam.shares[i], int64_t(protected_heads), int64_t(total),
                      int64_t(N), kept * per_slot, int64_t(total) * N * per_slot,
                      double(kept) / (double(total) * N), copy_acc[i], recall_acc[i],
                      passkey_acc[i], multikey_acc[i], ppl_first[i]});
    }
  }
};

// Windows the model cannot hold are the config's errors, by key, before any work.
void check_windows(const PoliciesConfig& cfg, const Wants& want, const ExperimentContext& ctx,
                   const std::string& model, const ModelConfig& c) {
  KV_CHECK(
      !want.ppl || cfg.ppl.window == 0 || (cfg.ppl.window >= 4 && cfg.ppl.window <= c.max_seq_len),
      "{}: kv_cache_policies.perplexity.window is {}, but model {} takes 4 to {} tokens",
      ctx.config_file.string(), cfg.ppl.window, model, c.max_seq_len);
  KV_CHECK(!want.copy || cfg.copy.context <= c.max_seq_len,
           "{}: kv_cache_policies.copy.context is {}, but model {} takes at most {} tokens",
           ctx.config_file.string(), cfg.copy.context, model, c.max_seq_len);
}

// protected.csv: every razor-family policy's protected heads with their probe scores; and
// a warning when no head stands out, so razor's choice is by rank alone.
void add_protected_rows(Table& prot, ExperimentContext& ctx, const std::string& model,
                        const ModelConfig& c, const Family& fam, const ProbeSeeds& ps,
                        double uniform) {
  const HeadScores& scores = ps.pooled;
  const bool any_razor = std::any_of(fam.specs.begin(), fam.specs.end(), [](const PolicySpec& p) {
    return p.kind == PolicyKind::kRazor;
  });
  if (const RetrievalEvidence ev = retrieval_evidence(scores, uniform);
      any_razor && ev.known && ev.heads_above == 0)
    ctx.warn(
        fmt::format("{}: no KV head's induction or echo score stands out of the uniform "
                    "level by more than 3 standard errors across {} probes: razor's "
                    "protected heads are picked by rank alone",
                    model, scores.probes));
  for (const PolicySpec& p : fam.specs)
    if (p.kind == PolicyKind::kRazor)
      for (int l = 0; l < c.n_layers; ++l)
        for (int g = 0; g < c.n_kv_heads; ++g)
          if (const size_t i = size_t(l) * c.n_kv_heads + g; p.protected_heads[i])
            prot.add_row({model, p.name, int64_t(l), int64_t(g),
                          scores.kv_induction[i] / ps.uniform, scores.kv_echo[i] / ps.uniform});
}

void add_plots(const PoliciesConfig& cfg, const Wants& want, ExperimentContext& ctx) {
  if (want.recall)
    ctx.after_tables.push_back(
        [](const std::filesystem::path& dir) { plot_recall(dir / "recall.csv", dir); });
  if ((want.recall || want.passkey) && cfg.induction_shares.size() > 1 &&
      contains(cfg.policies, "full") && contains(cfg.policies, "razor"))
    ctx.after_tables.push_back(
        [](const std::filesystem::path& dir) { plot_ablation(dir / "policies.csv", dir); });
  if (want.passkey)
    ctx.after_tables.push_back(
        [](const std::filesystem::path& dir) { plot_recall(dir / "passkey.csv", dir); });
}

Tables run_policies(const PoliciesConfig& cfg, ExperimentContext& ctx) {
  const Wants want(cfg.tasks);
  KV_CHECK(!want.filler() || cfg.has_filler,
           "{}: kv_cache_policies.filler (a text) is needed by the copy, recall, passkey and "
           "multikey tasks",
           ctx.config_file.string());
  KV_CHECK(
      !want.ppl || !ctx.texts.empty(),
      "{}: the perplexity task needs at least one text under texts:", ctx.config_file.string());
  PolicyTables t;
  nlohmann::json timings = nlohmann::json::array();
  ctx.begin_units(int(ctx.models.size()));
  for (const ModelSpec& ms : ctx.models) {
    const auto t0 = std::chrono::steady_clock::now();
    const LoadedModel lm = ctx.load(ms);
    const Model& m = lm.model;
    const ModelConfig& c = m.config;
    check_windows(cfg, want, ctx, ms.name, c);
    ProbeOptions po = cfg.probe;
    po.seed = ctx.seed;
    // Progress by task (each scores every policy): the probe, then copy, recall, passkey
    // and perplexity per text.
    const int n_tasks = 1 + int(want.copy) + int(want.recall) + int(want.passkey) +
                        int(want.multikey) + (want.ppl ? int(ctx.texts.size()) : 0);
    int task = 0;
    const auto next = [&](const std::string& what) {
      ctx.step(fmt::format("{}: {} ({} policies); task", ms.name, what, cfg.policies.size()),
               task++, n_tasks);
    };
    next("retrieval probe");
    const ProbeSeeds ps = probe_by_seed(m, po, cfg.probe_seeds);
    add_probe_rows(t.probes, ms.name, ps);
    add_selection_rows(t.selections, ms.name, ps, cfg.induction_shares, cfg.echo_share);
    const Family fam = build_policies(cfg, ps.pooled, ctx.seed);
    std::vector<std::string> names;
    for (const PolicySpec& p : fam.specs) names.push_back(p.name);
    PairedItems items(names);
    add_protected_rows(t.prot, ctx, ms.name, c, fam, ps, uniform_score(resolve_probe(m, po, 0)));
    const TaskVariants tv = paper_b_variants(fam.specs, cfg.params, c);
    std::vector<int32_t> filler;
    if (want.filler())
      filler = without_bos(token_stream(*lm.tokenizer, ctx.documents(cfg.filler)), c.bos_id);
    ModelScoring run{cfg, ctx, t, ms.name, lm, fam, tv, filler, items};
    if (want.copy) {
      next("copy");
      run.copy();
    }
    if (want.recall) {
      next("recall");
      run.recall();
    }
    if (want.passkey) {
      next("passkey");
      run.passkey();
    }
    if (want.multikey) {
      next("multikey");
      run.multikey();
    }
    for (size_t ti = 0; want.ppl && ti < ctx.texts.size(); ++ti) {
      next("perplexity on " + ctx.texts[ti].name);
      run.perplexity(ti);
    }
    run.main_rows();
    items.write(t.paired, ms.name, fam.references);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ctx.unit_done(fmt::format("{}: {} policies scored in {:.1f} s", ms.name, run.np, secs));
    timings.push_back({{"model", ms.name}, {"seconds", secs}});
  }
  ctx.manifest->extra["timings"] = timings;
  add_plots(cfg, want, ctx);
  return t.written(want);
}

}  // namespace

ExperimentKind kv_cache_policies_kind() {
  ExperimentKind k;
  k.name = "kv_cache_policies";
  k.summary =
      "cache policies (full, streaming, razor and ablations, h2o) on copy, recall and "
      "perplexity, with the share of the cache kept";
  k.needs_texts = false;
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    PoliciesConfig cfg;
    if (s.has("policies")) cfg.policies = s.list<std::string>("policies");
    for (const std::string& p : cfg.policies)
      KV_CHECK(contains(kPolicies, p) || contains(kAblations, p),
               "{}: kv_cache_policies.policies: '{}' is not one of {}, {}", s.file(), p,
               fmt::join(kPolicies, ", "), fmt::join(kAblations, ", "));
    if (s.has("induction_shares")) cfg.induction_shares = s.list<double>("induction_shares");
    cfg.echo_share = s.get_or<double>("echo_share", cfg.echo_share);
    for (double v : cfg.induction_shares)
      KV_CHECK(v >= 0 && v <= 1, "{}: kv_cache_policies.induction_shares: {} is not in [0, 1]",
               s.file(), v);
    KV_CHECK(!cfg.induction_shares.empty(), "{}: kv_cache_policies.induction_shares is empty",
             s.file());
    cfg.params.n_sink = s.get_at_least_or<int>("n_sink", 0, cfg.params.n_sink);
    cfg.params.s0 = s.get_at_least_or<int>("s0", 0, cfg.params.s0);
    cfg.params.c = s.get_or<double>("c", cfg.params.c);
    KV_CHECK(cfg.params.c > 0, "{}: kv_cache_policies.c must be > 0, got {}", s.file(),
             cfg.params.c);
    YamlMap probe = s.map_or_empty("probe");
    cfg.probe = parse_probe_options(probe);
    if (s.has("tasks")) cfg.tasks = s.list<std::string>("tasks");
    for (const std::string& t : cfg.tasks)
      KV_CHECK(
          t == "copy" || t == "recall" || t == "passkey" || t == "multikey" || t == "perplexity",
          "{}: kv_cache_policies.tasks: '{}' is not one of copy, recall, passkey, multikey, "
          "perplexity",
          s.file(), t);
    if (s.has("filler")) {
      YamlMap f = s.map("filler");
      cfg.filler = parse_text_spec(f);
      cfg.has_filler = true;
    }
    YamlMap cp = s.map_or_empty("copy");
    cfg.copy.context = cp.get_at_least_or<int>("context", 0, 0);
    cfg.copy.segment = cp.get_at_least_or<int>("segment", 2, cfg.copy.segment);
    cfg.copy.depths = cp.list_or<double>("depths", cfg.copy.depths);
    cfg.copy.trials = cp.get_at_least_or<int>("trials", 1, cfg.copy.trials);
    cfg.recall = parse_recall_task(s.map_or_empty("recall"));
    cfg.passkey = parse_passkey_task(s.map_or_empty("passkey"), false);
    {
      YamlMap mk = s.map_or_empty("multikey");
      cfg.multikey_keys = mk.list_or<int>("keys", cfg.multikey_keys);
      KV_CHECK(!cfg.multikey_keys.empty(), "{}: kv_cache_policies.multikey.keys is empty",
               s.file());
      for (int keys : cfg.multikey_keys)
        KV_CHECK(keys >= 2 && keys <= 64,
                 "{}: kv_cache_policies.multikey.keys: {} is not in [2, 64]", s.file(), keys);
      cfg.multikey = parse_passkey_task(mk, false);
    }
    cfg.probe_seeds = s.get_at_least_or<int>("probe_seeds", 1, 1);
    cfg.random_draws = s.get_at_least_or<int>("random_draws", 1, 1);
    for (double d : cfg.copy.depths)
      KV_CHECK(d >= 0 && d <= 1, "{}: kv_cache_policies.copy: depth {} is not in [0, 1]", s.file(),
               d);
    YamlMap pp = s.map_or_empty("perplexity");
    cfg.ppl.window = pp.get_at_least_or<int>("window", 0, 0);
    cfg.ppl.prefill = pp.get_or<double>("prefill", cfg.ppl.prefill);
    cfg.ppl.windows = pp.get_at_least_or<int>("windows", 1, cfg.ppl.windows);
    KV_CHECK(cfg.ppl.prefill > 0 && cfg.ppl.prefill < 1,
             "{}: kv_cache_policies.perplexity.prefill must lie in (0, 1), got {}", s.file(),
             cfg.ppl.prefill);
    return [cfg](ExperimentContext& ctx) { return run_policies(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
