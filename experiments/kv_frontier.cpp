// Experiment kind `kv_frontier`: every eviction method (kv/eviction.hpp) at every budget on
// one bytes axis, against the full cache, on the same items (paired): the frontier of how
// much of the KV cache can go. `texts:` are the continuation texts.
//
//   kv_frontier:
//     methods: [streaming, h2o, snapkv, pyramidkv, adakv, tova, knorm, random, razor]
//     method_keys:              # per method, its keys (docs/experiments.md); defaults: papers'
//       snapkv: {window: 32, kernel: 7}
//       razor: {sinks: 4, induction_share: 0.14, echo_share: 0.01, probe: {}}
//     budgets: [0.5, 0.25, 0.125, 0.0625]  # shares of the full cache's slots per head
//     during_decoding: true     # keep the budget after every decoded token
//     element_bits: 16          # bits per stored K/V element in the byte accounting
//     tasks: [continuation, passkey, multikey, recall]
//     filler: {path: ...}       # natural text for the passkey and recall contexts
//     continuation: {window: 0, prefill: 0.75, windows: 16}
//     passkey: {lengths: [], depths: [...], key: 16, token_lo: -1, token_hi: 0, trials: 8}
//     multikey: {... as passkey, distractors: 3}
//     recall: {lengths: [], depths: [...], names: [...], needle: ..., cue: ..., trials: 4}
#include <chrono>
#include <nlohmann/json.hpp>

#include "experiments.hpp"
#include "kvscope/kv/policy_eval.hpp"
#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "retrieval_config.hpp"

namespace kvscope {

namespace {

const std::vector<std::string> kTasks = {"continuation", "passkey", "multikey", "recall"};

struct MethodSpec {
  std::string name;
  YamlMap keys;  // read again per model (razor's retrieval heads are the model's)
  HeadSelection heads;
  ProbeOptions probe;
};

struct FrontierConfig {
  std::vector<MethodSpec> methods;
  std::vector<double> budgets = {0.5, 0.25, 0.125, 0.0625};
  bool during_decoding = true;
  int element_bits = 16;
  std::vector<std::string> tasks = {"continuation", "passkey", "recall"};
  TextSpec filler;
  bool has_filler = false;
  ContinuationTask cont;
  PasskeyTask passkey, multikey;
  RecallTask recall;
};

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::vector<int32_t> without_bos(std::vector<int32_t> t, int32_t bos) {
  t.erase(std::remove(t.begin(), t.end(), bos), t.end());
  return t;
}

// One aggregated score: a task's TaskScores summed over its cells (items add up).
struct Agg {
  TaskScore t;
  double share_sum = 0.0;
  int64_t share_items = 0;
  void add(const TaskScore& s, int64_t cell_items) {
    t.count += s.count, t.items += s.items;
    t.sx += s.sx, t.sxx += s.sxx, t.sd += s.sd, t.sdd += s.sdd;
    if (s.items > 0) share_sum += s.kv_share * double(cell_items), share_items += cell_items;
  }
  double mean() const { return t.items > 0 ? t.sx / double(t.items) : NAN; }
  double share() const { return share_items > 0 ? share_sum / double(share_items) : NAN; }
};

PasskeyTask parse_passkey(YamlMap pk, bool multikey) {
  PasskeyTask t;
  t.lengths = pk.list_or<int>("lengths", {});
  t.depths = pk.list_or<double>("depths", t.depths);
  t.key = pk.get_at_least_or<int>("key", 2, t.key);
  t.token_lo = pk.get_at_least_or<int>("token_lo", -1, -1);
  t.token_hi = pk.get_at_least_or<int>("token_hi", 0, 0);
  t.trials = pk.get_at_least_or<int>("trials", 1, t.trials);
  t.distractors = multikey ? pk.get_at_least_or<int>("distractors", 1, 3) : 0;
  for (double d : t.depths)
    KV_CHECK(d >= 0 && d <= 1, "{}: key '{}': depth {} is not in [0, 1]", pk.file(),
             pk.key_path("depths"), d);
  return t;
}

Tables run_frontier(const FrontierConfig& cfg, ExperimentContext& ctx) {
  const bool want_cont = has(cfg.tasks, "continuation"), want_pk = has(cfg.tasks, "passkey"),
             want_mk = has(cfg.tasks, "multikey"), want_rc = has(cfg.tasks, "recall");
  KV_CHECK(!(want_pk || want_mk || want_rc) || cfg.has_filler,
           "{}: kv_frontier.filler (a text) is needed by the passkey, multikey and recall tasks",
           ctx.config_file.string());
  KV_CHECK(
      !want_cont || !ctx.texts.empty(),
      "{}: the continuation task needs at least one text under texts:", ctx.config_file.string());
  Table frontier("frontier", {{"model", Column::String},
                              {"method", Column::String},
                              {"budget", Column::Float},
                              {"task", Column::String},
                              {"measure", Column::String},
                              {"value", Column::Float},
                              {"se", Column::Float},
                              {"delta", Column::Float},
                              {"delta_se", Column::Float},
                              {"items", Column::Int},
                              {"kv_share", Column::Float}});
  Table prot("protected", {{"model", Column::String},
                           {"method", Column::String},
                           {"layer", Column::Int},
                           {"kv_head", Column::Int}});
  nlohmann::json timings = nlohmann::json::array();
  ctx.begin_units(int(ctx.models.size()));
  for (const ModelSpec& ms : ctx.models) {
    const auto t0 = std::chrono::steady_clock::now();
    const LoadedModel lm = ctx.load(ms);
    const Model& m = lm.model;
    const ModelConfig& c = m.config;
    // Before any work: a window the model cannot hold is the config's error, by key.
    KV_CHECK(!want_cont || cfg.cont.window == 0 ||
                 (cfg.cont.window >= 4 && cfg.cont.window <= c.max_seq_len),
             "{}: kv_frontier.continuation.window is {}, but model {} takes 4 to {} tokens",
             ctx.config_file.string(), cfg.cont.window, ms.name, c.max_seq_len);
    // The variants: the full cache, then every method at every budget.
    TaskVariants tv;
    tv.seed = ctx.seed;
    tv.elem_bytes = cfg.element_bits / 8;
    std::vector<Variant> proto = {Variant{}};
    proto[0].name = "full", proto[0].peak_share = true;
    for (const MethodSpec& spec : cfg.methods) {
      const EvictionMethod& method = eviction_method(spec.name, ctx.config_file.string());
      PolicyContext pc;
      if (method.needs_retrieval_heads) {
        ctx.step(fmt::format("{}: retrieval probe for {}", ms.name, spec.name), 0, 1);
        ProbeOptions po = spec.probe;
        po.seed = ctx.seed;
        pc.protected_heads = select_retrieval_heads(probe_heads(m, po), spec.heads);
        for (int l = 0; l < c.n_layers; ++l)
          for (int g = 0; g < c.n_kv_heads; ++g)
            if (pc.protected_heads[size_t(l) * c.n_kv_heads + g])
              prot.add_row({ms.name, spec.name, int64_t(l), int64_t(g)});
      }
      YamlMap keys = spec.keys;
      const std::shared_ptr<const EvictionPolicy> policy = method.make(keys, pc);
      tv.needs.window_queries = std::max(tv.needs.window_queries, policy->needs().window_queries);
      tv.needs.attention_mass |= policy->needs().attention_mass;
      for (double b : cfg.budgets) {
        Variant v;
        v.name = spec.name, v.policy = policy, v.share = b;
        v.during_decoding = cfg.during_decoding, v.peak_share = true;
        proto.push_back(v);
      }
    }
    tv.count = proto.size();
    tv.at = [proto](int) { return proto; };
    const size_t np = proto.size();
    auto budget_of = [&](size_t i) { return i == 0 ? 1.0 : proto[i].share; };
    auto row = [&](size_t i, const char* task, const char* measure, double value, double se,
                   const TaskScore& s, double delta, double delta_se, double share) {
      frontier.add_row({ms.name, proto[i].name, budget_of(i), std::string(task),
                        std::string(measure), value, se, delta, delta_se, s.items, share});
    };
    const int n_tasks =
        int(want_cont) * int(ctx.texts.size()) + int(want_pk) + int(want_mk) + int(want_rc);
    int task = 0;
    const auto next = [&](const std::string& what) {
      ctx.step(fmt::format("{}: {} ({} variants); task", ms.name, what, np), task++, n_tasks);
    };
    if (want_cont)
      for (const TextSpec& ts : ctx.texts) {
        next("continuation on " + ts.name);
        const std::vector<int32_t> stream =
            without_bos(token_stream(*lm.tokenizer, ctx.documents(ts)), c.bos_id);
        const auto r = run_continuation(m, stream, cfg.cont, tv);
        const double full_ppl = std::exp(r[0].nll.score);
        for (size_t i = 0; i < np; ++i) {
          const ContinuationScore& s = r[i];
          const double ppl = std::exp(s.nll.score);
          const std::string t = "continuation:" + ts.name;
          row(i, t.c_str(), "nll", s.nll.score, s.nll.se(), s.nll, s.nll.paired_mean(),
              s.nll.paired_se(), s.nll.kv_share);
          // exp of the mean NLL; errors by the delta method (ppl * se of the NLL).
          row(i, t.c_str(), "perplexity", ppl, ppl * s.nll.se(), s.nll, ppl - full_ppl,
              ppl * s.nll.paired_se(), s.nll.kv_share);
          row(i, t.c_str(), "kl", s.kl.score, s.kl.se(), s.kl, s.kl.paired_mean(), s.kl.paired_se(),
              s.kl.kv_share);
          row(i, t.c_str(), "top1", s.top1.score, s.top1.se(), s.top1, s.top1.paired_mean(),
              s.top1.paired_se(), s.top1.kv_share);
        }
      }
    std::vector<int32_t> filler;
    if (want_pk || want_mk || want_rc)
      filler = without_bos(token_stream(*lm.tokenizer, ctx.documents(cfg.filler)), c.bos_id);
    auto grid = [&](const std::vector<RecallCell>& cells, const char* name, const char* measure) {
      KV_CHECK(!cells.empty(), "{}: no {} length fits model {} (context {})",
               ctx.config_file.string(), name, ms.name, c.max_seq_len);
      for (size_t i = 0; i < np; ++i) {
        Agg a;
        for (const RecallCell& cell : cells) a.add(cell.scores[i], cell.scores[0].items);
        const TaskScore& t = a.t;
        row(i, name, measure, a.mean(), t.se(), t, t.paired_mean(), t.paired_se(), a.share());
      }
    };
    if (want_pk) {
      next("passkey");
      PasskeyTask pt = cfg.passkey;
      pt.seed = ctx.seed;
      grid(run_passkey(m, filler, pt, tv), "passkey", "accuracy");
    }
    if (want_mk) {
      next("multikey");
      PasskeyTask pt = cfg.multikey;
      pt.seed = ctx.seed + 1;
      grid(run_passkey(m, filler, pt, tv), "multikey", "accuracy");
    }
    if (want_rc) {
      next("recall");
      grid(run_recall(m, *lm.tokenizer, filler, cfg.recall, tv), "recall", "accuracy");
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ctx.unit_done(fmt::format("{}: {} variants scored in {:.1f} s", ms.name, np, secs));
    timings.push_back({{"model", ms.name}, {"seconds", secs}});
  }
  ctx.manifest->extra["timings"] = timings;
  ctx.after_tables.push_back(
      [](const std::filesystem::path& dir) { plot_frontier(dir / "frontier.csv", dir); });
  return {frontier, prot};
}

}  // namespace

ExperimentKind kv_frontier_kind() {
  ExperimentKind k;
  k.name = "kv_frontier";
  k.summary =
      "every eviction method at every budget on one bytes axis: perplexity, KL, top-1, "
      "passkey, multi-key needle and name recall against the full cache";
  k.needs_texts = false;
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    FrontierConfig cfg;
    std::vector<std::string> names;
    for (const EvictionMethod& m : eviction_methods()) names.push_back(m.name);
    names = s.list_or<std::string>("methods", names);
    KV_CHECK(!names.empty(), "{}: kv_frontier.methods is empty", s.file());
    YamlMap mk = s.map_or_empty("method_keys");
    for (const std::string& n : names) {
      KV_CHECK(std::count(names.begin(), names.end(), n) == 1,
               "{}: kv_frontier.methods names '{}' twice", s.file(), n);
      const EvictionMethod& method = eviction_method(n, s.file() + ": kv_frontier.methods");
      MethodSpec spec{n, mk.map_or_empty(n), {}, {}};
      if (method.needs_retrieval_heads) {
        spec.heads.induction_share =
            spec.keys.get_or<double>("induction_share", spec.heads.induction_share);
        spec.heads.echo_share = spec.keys.get_or<double>("echo_share", spec.heads.echo_share);
        for (const char* key : {"induction_share", "echo_share"})
          KV_CHECK(
              spec.keys.get_or<double>(key, 0.0) >= 0 && spec.keys.get_or<double>(key, 0.0) <= 1,
              "{}: key '{}' must lie in [0, 1]", s.file(), spec.keys.key_path(key));
        YamlMap probe = spec.keys.map_or_empty("probe");
        spec.probe = parse_probe_options(probe);
      }
      // Read every key now, so a typo fails before any model loads.
      YamlMap keys = spec.keys;
      method.make(keys, PolicyContext{});
      cfg.methods.push_back(spec);
    }
    cfg.budgets = s.list_or<double>("budgets", cfg.budgets);
    KV_CHECK(!cfg.budgets.empty(), "{}: kv_frontier.budgets is empty", s.file());
    for (double b : cfg.budgets) {
      KV_CHECK(b > 0 && b <= 1, "{}: kv_frontier.budgets: {} is not a share in (0, 1]", s.file(),
               b);
      KV_CHECK(std::count(cfg.budgets.begin(), cfg.budgets.end(), b) == 1,
               "{}: kv_frontier.budgets lists {} twice", s.file(), b);
    }
    cfg.during_decoding = s.get_or<bool>("during_decoding", cfg.during_decoding);
    cfg.element_bits = s.get_or<int>("element_bits", cfg.element_bits);
    KV_CHECK(cfg.element_bits == 8 || cfg.element_bits == 16 || cfg.element_bits == 32,
             "{}: kv_frontier.element_bits must be 8, 16 or 32, got {}", s.file(),
             cfg.element_bits);
    cfg.tasks = s.list_or<std::string>("tasks", cfg.tasks);
    for (const std::string& t : cfg.tasks)
      KV_CHECK(has(kTasks, t), "{}: kv_frontier.tasks: '{}' is not one of {}", s.file(), t,
               fmt::join(kTasks, ", "));
    if (s.has("filler")) {
      YamlMap f = s.map("filler");
      cfg.filler = parse_text_spec(f);
      cfg.has_filler = true;
    }
    YamlMap ct = s.map_or_empty("continuation");
    cfg.cont.window = ct.get_at_least_or<int>("window", 0, 0);
    cfg.cont.prefill = ct.get_or<double>("prefill", cfg.cont.prefill);
    cfg.cont.windows = ct.get_at_least_or<int>("windows", 1, cfg.cont.windows);
    KV_CHECK(cfg.cont.prefill > 0 && cfg.cont.prefill < 1,
             "{}: kv_frontier.continuation.prefill must lie in (0, 1), got {}", s.file(),
             cfg.cont.prefill);
    cfg.passkey = parse_passkey(s.map_or_empty("passkey"), false);
    cfg.multikey = parse_passkey(s.map_or_empty("multikey"), true);
    YamlMap rc = s.map_or_empty("recall");
    cfg.recall.lengths = rc.list_or<int>("lengths", {});
    cfg.recall.depths = rc.list_or<double>("depths", cfg.recall.depths);
    cfg.recall.names = rc.list_or<std::string>("names", cfg.recall.names);
    cfg.recall.needle = rc.get_or<std::string>("needle", cfg.recall.needle);
    cfg.recall.cue = rc.get_or<std::string>("cue", cfg.recall.cue);
    cfg.recall.trials = rc.get_at_least_or<int>("trials", 1, cfg.recall.trials);
    KV_CHECK(cfg.recall.needle.find("{}") != std::string::npos,
             "{}: kv_frontier.recall.needle must contain {{}} where the name goes", s.file());
    for (double d : cfg.recall.depths)
      KV_CHECK(d >= 0 && d <= 1, "{}: kv_frontier.recall: depth {} is not in [0, 1]", s.file(), d);
    return [cfg](ExperimentContext& ctx) { return run_frontier(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
