// Experiment kind `kv_frontier`: every way to shrink the KV cache on one bytes axis
// against the full cache, on the same items (paired): eviction (kv/eviction.hpp),
// quantization, low rank and pruned channels (kv/kv_codec.hpp), merged KV heads
// (kv/kv_reduction.hpp) and compositions ("snapkv+q8_0"). `texts:` are the continuation
// texts.
//
//   kv_frontier:
//     methods: [streaming, snapkv, q8_0, kivi, lowrank, merged_svd_a, razor+kivi, ...]
//     method_keys:              # per method or label, its keys (docs/experiments.md)
//       snapkv: {window: 32, kernel: 7}
//       kivi4: {method: kivi, bits: 4}   # a label: another setting of a method
//     budgets: [0.5, 0.25, 0.125, 0.0625]  # shares: slots, rank, channels or KV heads
//     during_decoding: true     # keep the budget after every decoded token
//     element_bits: 16          # bits per K/V element held as computed
//     calibration: {path: ...}  # low-rank bases, SVD-a merged heads
//     calibration_tokens: 16384
//     tasks: [continuation, passkey, multikey, recall]
//     filler: {path: ...}       # natural text for the passkey and recall contexts
//     continuation: {window: 0, prefill: 0.75, windows: 16}
//     passkey: {lengths: [], depths: [...], key: 16, token_lo: -1, token_hi: 0, trials: 8}
//     multikey: {... as passkey, distractors: 3}
//     recall: {lengths: [], depths: [...], names: [...], needle: ..., cue: ..., trials: 4}
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "experiments.hpp"
#include "kvscope/kv/calibration.hpp"
#include "kvscope/kv/kv_reduction.hpp"
#include "kvscope/kv/policy_eval.hpp"
#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "retrieval_config.hpp"
#include "task_config.hpp"

namespace kvscope {

namespace {

const std::vector<std::string> kTasks = {"continuation", "passkey", "multikey", "recall"};

// One part of a method label: an eviction policy, a codec, or merged heads.
struct Part {
  explicit Part(YamlMap k) : keys(std::move(k)) {}
  std::string name;  // the registered method
  const EvictionMethod* eviction = nullptr;
  const CodecMethod* codec = nullptr;
  std::optional<ReduceMethod> merged;
  YamlMap keys;  // read again per model (razor's retrieval heads are the model's)
  HeadSelection heads;
  ProbeOptions probe;
  double share = 0.5;  // a budgeted part that is not the label's first: its fixed share
};

// A label of `methods`: one part, or parts joined by '+', the budgets going to the first
// part that takes one.
struct MethodSpec {
  std::string label, family;
  std::vector<Part> parts;
  bool budgeted = false;
};

struct FrontierConfig {
  std::vector<MethodSpec> methods;
  std::vector<double> budgets = {0.5, 0.25, 0.125, 0.0625};
  bool during_decoding = true;
  int element_bits = 16;
  std::vector<std::string> tasks = {"continuation", "passkey", "recall"};
  TextSpec filler, calibration;
  bool has_filler = false, has_calibration = false;
  int64_t calibration_tokens = 16384;
  ContinuationTask cont;
  PasskeyTask passkey, multikey;
  RecallTask recall;
};

bool takes_budget(const Part& p) {
  return p.eviction || p.merged || (p.codec && p.codec->takes_budget);
}
bool needs_grams(const Part& p) {
  return (p.codec && p.codec->needs_calibration) || (p.merged && needs_calibration(*p.merged));
}

const std::vector<std::pair<std::string, ReduceMethod>> kMerged = {
    {"merged_mean_pool", ReduceMethod::kMeanPool},
    {"merged_svd_w", ReduceMethod::kSvdW},
    {"merged_svd_a", ReduceMethod::kSvdA}};

std::vector<std::string> all_method_names() {
  std::vector<std::string> names;
  for (const EvictionMethod& m : eviction_methods()) names.push_back(m.name);
  for (const CodecMethod& m : codec_methods()) names.push_back(m.name);
  for (const auto& [n, r] : kMerged) names.push_back(n);
  return names;
}

// Resolves one part: `name` is a registered method, or a label whose keys name one
// (`method:`).
Part parse_part(const std::string& name, YamlMap& method_keys, const std::string& file) {
  YamlMap keys = method_keys.map_or_empty(name);
  std::string method = name;
  if (keys.has("method")) method = keys.get<std::string>("method");
  Part p(keys);
  p.name = method;
  for (const EvictionMethod& m : eviction_methods())
    if (m.name == method) p.eviction = &m;
  p.codec = find_codec_method(method);
  for (const auto& [n, r] : kMerged)
    if (n == method) p.merged = r;
  KV_CHECK(p.eviction || p.codec || p.merged,
           "{}: kv_frontier.methods: '{}' is not a method (one of {}), nor a label whose "
           "method_keys name one with `method:`{}",
           file, method, fmt::join(all_method_names(), ", "),
           method == name ? "" : fmt::format(" (label '{}' names it)", name));
  // Read every key now, so a typo fails before any model loads.
  YamlMap k = keys;
  if (k.has("method")) k.get<std::string>("method");
  if (p.eviction && p.eviction->needs_retrieval_heads) {
    p.heads.induction_share = k.get_or<double>("induction_share", p.heads.induction_share);
    p.heads.echo_share = k.get_or<double>("echo_share", p.heads.echo_share);
    for (const char* key : {"induction_share", "echo_share"})
      KV_CHECK(k.get_or<double>(key, 0.0) >= 0 && k.get_or<double>(key, 0.0) <= 1,
               "{}: key '{}' must lie in [0, 1]", file, k.key_path(key));
    YamlMap probe = k.map_or_empty("probe");
    p.probe = parse_probe_options(probe);
  }
  if (p.eviction) p.eviction->make(k, PolicyContext{});
  if (p.codec) p.codec->make(k, CodecContext{}, 1.0);
  return p;
}

MethodSpec parse_label(const std::string& label, YamlMap& method_keys, const std::string& file) {
  MethodSpec spec;
  spec.label = label;
  size_t start = 0;
  while (true) {
    const size_t plus = label.find('+', start);
    const std::string part = label.substr(start, plus == std::string::npos ? plus : plus - start);
    KV_CHECK(!part.empty(), "{}: kv_frontier.methods: '{}' has an empty part", file, label);
    spec.parts.push_back(parse_part(part, method_keys, file));
    if (plus == std::string::npos) break;
    start = plus + 1;
  }
  int ev = 0, codec = 0, merged = 0;
  for (const Part& p : spec.parts)
    ev += p.eviction != nullptr, codec += p.codec != nullptr, merged += p.merged.has_value();
  KV_CHECK(spec.parts.size() == 1 || (ev == 1 && codec == 1 && spec.parts.size() == 2),
           "{}: kv_frontier.methods: '{}': a composition is one eviction method and one "
           "codec (e.g. snapkv+q8_0), got {} part(s): {} eviction, {} codec, {} merged",
           file, label, spec.parts.size(), ev, codec, merged);
  // The budgets go to the first part that takes one; a later one has its own `share`.
  for (Part& p : spec.parts) {
    if (!takes_budget(p)) continue;
    if (!spec.budgeted) {
      spec.budgeted = true;
      continue;
    }
    YamlMap k = p.keys;
    p.share = k.get_or<double>("share", p.share);
    KV_CHECK(p.share > 0 && p.share <= 1, "{}: key '{}' must lie in (0, 1], got {}", file,
             k.key_path("share"), p.share);
  }
  const Part& p0 = spec.parts[0];
  spec.family = spec.parts.size() > 1 ? "composition"
                : p0.eviction         ? "eviction"
                : p0.merged           ? "merged_heads"
                                      : p0.codec->family;
  if (spec.parts.size() > 1)
    for (const Part& p : spec.parts)
      if (p.codec && p.name == "lowrank") {
        YamlMap k = p.keys;
        KV_CHECK(k.get_or<int>("heads", 0) == 1,
                 "{}: kv_frontier.methods: '{}': a low-rank cache under eviction needs "
                 "`heads: 1` (a latent shared by several heads cannot be dropped by one)",
                 file, label);
      }
  return spec;
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

// The calibration Grams (pre-RoPE keys, keys, values of every layer) when a method needs
// them: low-rank bases and SVD-a merged heads.
std::unique_ptr<CalibrationGrams> calibrate(const FrontierConfig& cfg, ExperimentContext& ctx,
                                            const LoadedModel& lm, const std::string& name) {
  bool want = false;
  for (const MethodSpec& spec : cfg.methods)
    for (const Part& p : spec.parts) want |= needs_grams(p);
  if (!want) return nullptr;
  ctx.step(fmt::format("{}: calibration", name), 0, 1);
  CalibrationOptions co;
  co.tokens = cfg.calibration_tokens;
  co.tensors = {"k_pre_rope", "k", "v"};
  co.source = cfg.calibration.path.string();
  co.keys = "kv_frontier.calibration_tokens";
  const std::vector<int32_t> stream = token_stream(*lm.tokenizer, ctx.documents(cfg.calibration));
  return std::make_unique<CalibrationGrams>(
      collect_grams(lm.model, lm.model.config.bos_id, stream, co));
}

// A merged-heads part at `share` of the KV heads: sets v.model, or says why it cannot be
// built.
std::string merge_heads(const Part& part, double share, const Model& m, CalibrationGrams* grams,
                        Variant& v) {
  const ModelConfig& c = m.config;
  const double heads = share * c.n_kv_heads;
  const int target = int(std::lround(heads));
  if (std::abs(heads - target) > 1e-9 || target < 1 || c.n_kv_heads % target != 0 ||
      target == c.n_kv_heads)
    return fmt::format("{} x {} KV heads = {:g} is not a whole divisor of {} below it", share,
                       c.n_kv_heads, heads, c.n_kv_heads);
  if (c.qk_norm && *part.merged == ReduceMethod::kMeanPool)
    return "the model normalises each key head, which merged W_K rows would need a "
           "norm of their own for (kv_head_reduction: use svd_w or svd_a)";
  if (c.compressed_keys()) return "the model's KV heads are already reduced";
  v.model = std::make_shared<const Model>(reduce_kv_heads(m, target, *part.merged, grams).model);
  return "";
}

// The frontier's variants: the full cache, then every method at every budget it can
// reach (one that cannot is a row of unreachable.csv saying why), with each one's columns.
struct FrontierVariants {
  TaskVariants tv;
  std::vector<Variant> proto;
  std::vector<double> budget;
  std::vector<std::string> family;
  std::vector<int64_t> side_bytes;

  void add(Variant v, double b, const std::string& fam) {
    side_bytes.push_back(v.codec ? v.codec->side_bytes(tv.elem_bytes) : 0);
    proto.push_back(std::move(v));
    budget.push_back(b);
    family.push_back(fam);
  }
};

struct VariantBuilder {
  const FrontierConfig& cfg;
  ExperimentContext& ctx;
  const std::string& model;
  const Model& m;
  CalibrationGrams* grams;
  Table &prot, &unreachable;
  FrontierVariants out;

  // The method's eviction policy, if it has one (its protected heads probed when it needs
  // them, and listed in protected.csv).
  std::shared_ptr<const EvictionPolicy> policy_of(const MethodSpec& spec) {
    const ModelConfig& c = m.config;
    std::shared_ptr<const EvictionPolicy> policy;
    for (const Part& part : spec.parts) {
      if (!part.eviction) continue;
      PolicyContext pc;
      if (part.eviction->needs_retrieval_heads) {
        ctx.step(fmt::format("{}: retrieval probe for {}", model, spec.label), 0, 1);
        ProbeOptions po = part.probe;
        po.seed = ctx.seed;
        pc.protected_heads = select_retrieval_heads(probe_heads(m, po), part.heads);
        for (int l = 0; l < c.n_layers; ++l)
          for (int g = 0; g < c.n_kv_heads; ++g)
            if (pc.protected_heads[size_t(l) * c.n_kv_heads + g])
              prot.add_row({model, spec.label, int64_t(l), int64_t(g)});
      }
      YamlMap keys = part.keys;
      policy = part.eviction->make(keys, pc);
      out.tv.needs.window_queries =
          std::max(out.tv.needs.window_queries, policy->needs().window_queries);
      out.tv.needs.attention_mass |= policy->needs().attention_mass;
    }
    return policy;
  }

  // Method `spec` at budget b: its parts put together (the budget to the first part that
  // takes one); "" or why it cannot be built.
  std::string build(const MethodSpec& spec, double b, Variant& v) {
    std::string why;
    bool first = true;
    for (const Part& part : spec.parts) {
      double share = part.share;
      if (takes_budget(part) && first) share = b, first = false;
      if (part.eviction) v.share = share;
      if (part.codec) {
        YamlMap keys = part.keys;
        v.codec = part.codec->make(keys, CodecContext{&m, grams}, share);
        why = v.codec->unreachable(m.config);
        out.tv.needs.window_queries =
            std::max(out.tv.needs.window_queries, v.codec->needs().window_queries);
      }
      if (part.merged)
        if (std::string w = merge_heads(part, share, m, grams, v); !w.empty()) why = w;
    }
    return why;
  }

  FrontierVariants run() {
    out.tv.seed = ctx.seed;
    out.tv.elem_bytes = cfg.element_bits / 8;
    Variant full;
    full.name = "full", full.peak_share = true;
    out.add(full, 1.0, "full");
    for (const MethodSpec& spec : cfg.methods) {
      const std::shared_ptr<const EvictionPolicy> policy = policy_of(spec);
      for (double b : spec.budgeted ? cfg.budgets : std::vector<double>{1.0}) {
        Variant v;
        v.name = spec.label, v.policy = policy;
        v.during_decoding = cfg.during_decoding, v.peak_share = true;
        if (const std::string why = build(spec, b, v); !why.empty())
          unreachable.add_row({model, spec.label, b, why});
        else
          out.add(std::move(v), b, spec.family);
      }
    }
    out.tv.count = out.proto.size();
    out.tv.at = [proto = out.proto](int) { return proto; };
    return std::move(out);
  }
};

Table frontier_table() {
  return Table("frontier", {{"model", Column::String},
                            {"method", Column::String},
                            {"family", Column::String},
                            {"budget", Column::Float},
                            {"task", Column::String},
                            {"measure", Column::String},
                            {"value", Column::Float},
                            {"se", Column::Float},
                            {"delta", Column::Float},
                            {"delta_se", Column::Float},
                            {"items", Column::Int},
                            {"kv_share", Column::Float},
                            {"side_bytes", Column::Int}});
}

Tables run_frontier(const FrontierConfig& cfg, ExperimentContext& ctx) {
  const bool want_cont = contains(cfg.tasks, "continuation"),
             want_pk = contains(cfg.tasks, "passkey"), want_mk = contains(cfg.tasks, "multikey"),
             want_rc = contains(cfg.tasks, "recall");
  KV_CHECK(!(want_pk || want_mk || want_rc) || cfg.has_filler,
           "{}: kv_frontier.filler (a text) is needed by the passkey, multikey and recall tasks",
           ctx.config_file.string());
  KV_CHECK(
      !want_cont || !ctx.texts.empty(),
      "{}: the continuation task needs at least one text under texts:", ctx.config_file.string());
  Table frontier = frontier_table();
  Table unreachable("unreachable", {{"model", Column::String},
                                    {"method", Column::String},
                                    {"budget", Column::Float},
                                    {"reason", Column::String}});
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
    const std::unique_ptr<CalibrationGrams> grams = calibrate(cfg, ctx, lm, ms.name);
    const FrontierVariants fv =
        VariantBuilder{cfg, ctx, ms.name, m, grams.get(), prot, unreachable, {}}.run();
    const TaskVariants& tv = fv.tv;
    const size_t np = fv.proto.size();
    auto row = [&](size_t i, const std::string& task, const char* measure, double value, double se,
                   const TaskScore& s, double delta, double delta_se, double share) {
      frontier.add_row({ms.name, fv.proto[i].name, fv.family[i], fv.budget[i], task,
                        std::string(measure), value, se, delta, delta_se, s.items, share,
                        fv.side_bytes[i]});
    };
    const int n_tasks =
        int(want_cont) * int(ctx.texts.size()) + int(want_pk) + int(want_mk) + int(want_rc);
    int task = 0;
    const auto next = [&](const std::string& what) {
      ctx.step(fmt::format("{}: {} ({} variants); task", ms.name, what, np), task++, n_tasks);
    };
    for (size_t ti = 0; want_cont && ti < ctx.texts.size(); ++ti) {
      const TextSpec& ts = ctx.texts[ti];
      next("continuation on " + ts.name);
      const std::vector<int32_t> stream =
          without_bos(token_stream(*lm.tokenizer, ctx.documents(ts)), c.bos_id);
      const auto r = run_continuation(m, stream, cfg.cont, tv);
      const double full_ppl = std::exp(r[0].nll.score);
      const std::string t = "continuation:" + ts.name;
      for (size_t i = 0; i < np; ++i) {
        const ContinuationScore& s = r[i];
        const double ppl = std::exp(s.nll.score);
        row(i, t, "nll", s.nll.score, s.nll.se(), s.nll, s.nll.paired_mean(), s.nll.paired_se(),
            s.nll.kv_share);
        // exp of the mean NLL; errors by the delta method (ppl * se of the NLL).
        row(i, t, "perplexity", ppl, ppl * s.nll.se(), s.nll, ppl - full_ppl,
            ppl * s.nll.paired_se(), s.nll.kv_share);
        row(i, t, "kl", s.kl.score, s.kl.se(), s.kl, s.kl.paired_mean(), s.kl.paired_se(),
            s.kl.kv_share);
        row(i, t, "top1", s.top1.score, s.top1.se(), s.top1, s.top1.paired_mean(),
            s.top1.paired_se(), s.top1.kv_share);
      }
    }
    std::vector<int32_t> filler;
    if (want_pk || want_mk || want_rc)
      filler = without_bos(token_stream(*lm.tokenizer, ctx.documents(cfg.filler)), c.bos_id);
    auto grid = [&](const std::vector<RecallCell>& cells, const char* name) {
      KV_CHECK(!cells.empty(), "{}: no {} length fits model {} (context {})",
               ctx.config_file.string(), name, ms.name, c.max_seq_len);
      for (size_t i = 0; i < np; ++i) {
        Agg a;
        for (const RecallCell& cell : cells) a.add(cell.scores[i], cell.scores[0].items);
        const TaskScore& t = a.t;
        row(i, name, "accuracy", a.mean(), t.se(), t, t.paired_mean(), t.paired_se(), a.share());
      }
    };
    if (want_pk) {
      next("passkey");
      PasskeyTask pt = cfg.passkey;
      pt.seed = ctx.seed;
      grid(run_passkey(m, filler, pt, tv), "passkey");
    }
    if (want_mk) {
      next("multikey");
      PasskeyTask pt = cfg.multikey;
      pt.seed = ctx.seed + 1;
      grid(run_passkey(m, filler, pt, tv), "multikey");
    }
    if (want_rc) {
      next("recall");
      grid(run_recall(m, *lm.tokenizer, filler, cfg.recall, tv), "recall");
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ctx.unit_done(fmt::format("{}: {} variants scored in {:.1f} s", ms.name, np, secs));
    timings.push_back({{"model", ms.name}, {"seconds", secs}});
  }
  ctx.manifest->extra["timings"] = timings;
  ctx.after_tables.push_back(
      [](const std::filesystem::path& dir) { plot_frontier(dir / "frontier.csv", dir); });
  return {frontier, prot, unreachable};
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
    if (s.has("calibration")) {
      YamlMap cal = s.map("calibration");
      cfg.calibration = parse_text_spec(cal);
      cfg.has_calibration = true;
    }
    cfg.calibration_tokens = s.get_at_least_or<int64_t>("calibration_tokens", 1, 16384);
    // Default: every method that needs nothing the config does not give.
    std::vector<std::string> names;
    for (const std::string& n : all_method_names()) {
      const CodecMethod* cm = find_codec_method(n);
      const bool calibrated = (cm && cm->needs_calibration) || n == "merged_svd_a";
      if (n != "ggml" && (cfg.has_calibration || !calibrated)) names.push_back(n);
    }
    names = s.list_or<std::string>("methods", names);
    KV_CHECK(!names.empty(), "{}: kv_frontier.methods is empty", s.file());
    YamlMap mk = s.map_or_empty("method_keys");
    for (const std::string& n : names) {
      KV_CHECK(std::count(names.begin(), names.end(), n) == 1,
               "{}: kv_frontier.methods names '{}' twice", s.file(), n);
      cfg.methods.push_back(parse_label(n, mk, s.file()));
      for (const Part& p : cfg.methods.back().parts)
        KV_CHECK(!needs_grams(p) || cfg.has_calibration,
                 "{}: kv_frontier.methods: '{}' needs calibration activations: give "
                 "kv_frontier.calibration (a text)",
                 s.file(), n);
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
      KV_CHECK(contains(kTasks, t), "{}: kv_frontier.tasks: '{}' is not one of {}", s.file(), t,
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
    cfg.passkey = parse_passkey_task(s.map_or_empty("passkey"), false);
    cfg.multikey = parse_passkey_task(s.map_or_empty("multikey"), true);
    cfg.recall = parse_recall_task(s.map_or_empty("recall"));
    return [cfg](ExperimentContext& ctx) { return run_frontier(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
