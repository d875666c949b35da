// Experiment kind `kv_head_reduction` (paper A, Table 4 in kind): for every model, target
// KV-head count and method (include/kvscope/kv/kv_reduction.hpp), the reduced model's
// held-out perplexity, the relative error of its K and V (the original model's held-out
// activations reconstructed through the method's bases), the relative error of each
// layer's attention output against the original model, and the KV-cache bytes it keeps;
// the original model is the reference row. Decode speed with the reduced cache goes to
// timing_decode.csv (timings vary run to run; the other tables do not).
//
//   kv_head_reduction:
//     targets: [2, 1]                 # KV heads after reduction (must divide the model's)
//     methods: [mean_pool, svd_w, svd_a, svd_a_fused_pre_rope]
//     calibration: {path: ..., name: ...}   # a text like those under `texts:`
//     calibration_tokens: [16384]     # one row per value for the calibrated methods
//     calibration_seq_len: 0          # 0: the model's context, at most 2048
//     eval_tokens: 20000              # perplexity: tokens scored per text
//     window: 0                       # perplexity window (0: the context, at most 2048)
//     stride: 0                       # perplexity stride (0: window / 2)
//     error_tokens: 4096              # held-out tokens for the K/V/attention errors
//     error_seq_len: 0                # their sequence length (0: the context, at most 2048)
//     decode_context: 256             # decode speed: tokens already cached
//     decode_tokens: 64               # decode speed: tokens generated
//     probe: {repeats: 4, probes: 2}  # optional: does the reduced model still copy?
#include <chrono>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

#include "experiments.hpp"
#include "kvscope/io/sequences.hpp"
#include "kvscope/kv/calibration.hpp"
#include "kvscope/kv/kv_reduction.hpp"
#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "retrieval_config.hpp"

namespace kvscope {

namespace {

struct ReductionConfig {
  std::vector<int> targets = {2, 1};
  std::vector<ReduceMethod> methods = {ReduceMethod::kMeanPool, ReduceMethod::kSvdW,
                                       ReduceMethod::kSvdA, ReduceMethod::kSvdAFusedPreRope};
  TextSpec calibration;
  std::vector<int64_t> calibration_tokens = {16384};
  int calibration_seq_len = 0;
  int64_t eval_tokens = 20000;
  int window = 0, stride = 0;
  int64_t error_tokens = 4096;
  int error_seq_len = 0;
  int decode_context = 256, decode_tokens = 64;
  bool probe_models = false;  // the retrieval probe on the original and every reduced model
  ProbeOptions probe;
};

// Squared relative error of reconstructing `g`'s data through `bases` (one per group of
// `width` columns): sum over groups of (tr G - tr(Psi G Psi^T)), over tr of the whole Gram.
double reconstruction_error(GramAccumulator& g, const std::vector<std::vector<double>>& bases,
                            int width, int hd) {
  double total = 0.0, lost = 0.0;
  for (size_t j = 0; j < bases.size(); ++j) {
    const std::vector<double> b = g.block(int(j) * width, width, false);
    const std::vector<double>& psi = bases[j];
    double tr = 0.0, kept = 0.0;
    for (int a = 0; a < width; ++a) tr += b[size_t(a) * width + a];
    std::vector<double> pg(static_cast<size_t>(width));  // Psi_r G, one row r at a time
    for (int r = 0; r < hd; ++r) {
      for (int c = 0; c < width; ++c) {
        double acc = 0.0;
        for (int a = 0; a < width; ++a)
          acc += psi[size_t(r) * width + a] * b[size_t(a) * width + c];
        pg[size_t(c)] = acc;
      }
      for (int c = 0; c < width; ++c) kept += pg[size_t(c)] * psi[size_t(r) * width + c];
    }
    total += tr;
    lost += tr - kept;
  }
  return total > 0 ? std::max(0.0, lost) / total : 0.0;
}

// Relative error of each layer's attention output (after W_O) of `reduced` against
// `original`, both run on the same held-out sequences: sqrt(sum ||y_r - y_o||^2 / sum ||y_o||^2).
std::vector<double> attention_errors(const Model& original, const Model& reduced,
                                     const std::vector<std::vector<int32_t>>& seqs) {
  struct Proj : ForwardObserver {
    std::vector<std::vector<float>> y;  // per layer [T, dim]
    bool wants_attn_proj() const override { return true; }
    void on_layer(const LayerCapture& c) override {
      if (y.size() <= size_t(c.layer)) y.resize(size_t(c.layer) + 1);
      y[size_t(c.layer)].assign(c.attn_proj, c.attn_proj + size_t(c.n_tokens) * dim);
    }
    size_t dim = 0;
  };
  const int L = original.config.n_layers;
  // Per sequence and layer: the squared error and the squared norm [seqs][2 L]; sequences
  // are split across MPI ranks and summed in sequence order.
  std::vector<double> per_seq(seqs.size() * 2 * size_t(L), 0.0);
  for (size_t si = 0; si < seqs.size(); ++si) {
    if (!dist::mine(si)) continue;
    const auto& s = seqs[si];
    double* num = per_seq.data() + si * 2 * size_t(L);
    double* den = num + L;
    Proj a, b;
    a.dim = b.dim = size_t(original.config.dim);
    for (auto [m, obs] : {std::pair{&original, &a}, std::pair{&reduced, &b}}) {
      RunState st(m->config, int(s.size()));
      ForwardOptions fo;
      fo.observer = obs;
      fo.logits = LogitsMode::kNone;
      forward(*m, st, s, fo);
    }
    for (int l = 0; l < L; ++l)
      for (size_t i = 0; i < a.y[size_t(l)].size(); ++i) {
        const double d = double(b.y[size_t(l)][i]) - a.y[size_t(l)][i];
        num[l] += d * d;
        den[l] += double(a.y[size_t(l)][i]) * a.y[size_t(l)][i];
      }
  }
  dist::gather_owned(per_seq, 2 * size_t(L));
  std::vector<double> num(size_t(L), 0.0), den(size_t(L), 0.0);
  for (size_t si = 0; si < seqs.size(); ++si)
    for (int l = 0; l < L; ++l) {
      num[size_t(l)] += per_seq[si * 2 * size_t(L) + size_t(l)];
      den[size_t(l)] += per_seq[si * 2 * size_t(L) + size_t(L + l)];
    }
  std::vector<double> e(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l)
    e[size_t(l)] = den[size_t(l)] > 0 ? std::sqrt(num[size_t(l)] / den[size_t(l)]) : 0.0;
  return e;
}

// Decode speed: the best of 5 timed runs of n tokens after a prefill of ctx_tokens. One
// run of a tiny model lasts ~10 ms, so a single timing moves by +-30% with whatever else
// the machine does (and so did the verdict computed from it); the best run is the
// model's speed with the least interference.
double decode_tokens_per_second(const Model& m, const std::vector<int32_t>& ctx_tokens, int n) {
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    RunState st(m.config, int(ctx_tokens.size()) + n);
    forward(m, st, ctx_tokens, {LogitsMode::kLast});
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      const int32_t t = ctx_tokens[size_t(i) % ctx_tokens.size()];
      forward(m, st, std::span<const int32_t>(&t, 1), {LogitsMode::kLast});
    }
    best = std::max(
        best, n / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

struct ReductionTables {
  Table main{"reduction",
             {{"model", Column::String},
              {"text", Column::String},
              {"method", Column::String},
              {"kv_heads", Column::Int},
              {"calibration_tokens", Column::Int},
              {"tokens_scored", Column::Int},
              {"mean_nll", Column::Float},
              {"perplexity", Column::Float},
              {"k_rel_error", Column::Float},
              {"v_rel_error", Column::Float},
              {"attn_rel_error", Column::Float},
              {"kv_bytes_per_token", Column::Int},
              {"kv_bytes_ratio", Column::Float}}};
  Table layers{"layer_errors",
               {{"model", Column::String},
                {"text", Column::String},
                {"method", Column::String},
                {"kv_heads", Column::Int},
                {"calibration_tokens", Column::Int},
                {"layer", Column::Int},
                {"k_rel_error", Column::Float},
                {"v_rel_error", Column::Float},
                {"attn_rel_error", Column::Float}}};
  Table timing{"timing_decode",
               {{"model", Column::String},
                {"method", Column::String},
                {"kv_heads", Column::Int},
                {"context", Column::Int},
                {"tokens_per_second", Column::Float},
                {"original_tokens_per_second", Column::Float}}};
  // Whether a reduction keeps an induction circuit: the probe's best induction score and
  // the copy loss, per model (not per text).
  Table induction{"induction",
                  {{"model", Column::String},
                   {"method", Column::String},
                   {"kv_heads", Column::Int},
                   {"calibration_tokens", Column::Int},
                   {"best_induction", Column::Float},
                   {"uniform", Column::Float},
                   {"induction_ratio", Column::Float},
                   {"best_layer", Column::Int},
                   {"copy_nll_first", Column::Float},
                   {"copy_nll_later", Column::Float},
                   {"copy_drop", Column::Float}}};
};

// Calibration Grams, one set per token count (only the calibrated methods use them).
std::map<int64_t, CalibrationGrams> calibration_grams(const ReductionConfig& cfg,
                                                      ExperimentContext& ctx,
                                                      const LoadedModel& lm) {
  std::map<int64_t, CalibrationGrams> cal;
  const std::vector<int32_t> cal_stream =
      token_stream(*lm.tokenizer, ctx.documents(cfg.calibration));
  bool any_calibrated = false;
  for (ReduceMethod meth : cfg.methods) any_calibrated |= needs_calibration(meth);
  if (!any_calibrated) return cal;
  for (int64_t n : cfg.calibration_tokens) {
    CalibrationOptions co;
    co.tokens = n;
    co.seq_len = cfg.calibration_seq_len;
    co.source = cfg.calibration.path.string();
    co.keys = "kv_head_reduction.calibration_seq_len and kv_head_reduction.calibration_tokens";
    cal.emplace(n, collect_grams(lm.model, lm.tokenizer->sequence_bos(), cal_stream, co));
  }
  return cal;
}

// Squared relative reconstruction errors of a reduction's bases on held-out keys and
// values, per layer and pooled over layers (each layer weighted by its activations'
// energy, the trace of its Gram).
struct BasisErrors {
  std::vector<double> k, v;  // [layer]
  double k_pooled = 0, v_pooled = 0;
};

BasisErrors basis_errors(const ReducedModel& r, CalibrationGrams& held, const ModelConfig& c) {
  const int hd = c.head_dim, width = r.group * hd;
  BasisErrors e{std::vector<double>(size_t(c.n_layers)), std::vector<double>(size_t(c.n_layers))};
  double kn = 0.0, kd = 0.0, vn = 0.0, vd = 0.0;
  const auto trace = [&](GramAccumulator& acc) {
    const std::vector<double> full = acc.block(0, c.kv_dim(), false);
    double tr = 0.0;
    for (int a = 0; a < c.kv_dim(); ++a) tr += full[size_t(a) * c.kv_dim() + a];
    return tr;
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerBases& b = r.layers[size_t(l)];
    GramAccumulator& gk = held.at(l, b.keys_post_rope ? "k" : "k_pre_rope");
    GramAccumulator& gv = held.at(l, "v");
    e.k[size_t(l)] = reconstruction_error(gk, b.keys, width, hd);
    e.v[size_t(l)] = reconstruction_error(gv, b.values, width, hd);
    const double tk = trace(gk), tv = trace(gv);
    kn += e.k[size_t(l)] * tk;
    kd += tk;
    vn += e.v[size_t(l)] * tv;
    vd += tv;
  }
  e.k_pooled = kn / kd, e.v_pooled = vn / vd;
  return e;
}

// Adds a model's row to induction.csv: (method, model, calibration tokens).
using InductionRow = std::function<void(const std::string&, const Model&, int64_t)>;

// One text of one model: the original's perplexity and decode speed, then every
// reduction's errors, perplexity and speed.
struct TextScoring {
  const ReductionConfig& cfg;
  ExperimentContext& ctx;
  ReductionTables& t;
  const std::string& model;
  const LoadedModel& lm;
  std::map<int64_t, CalibrationGrams>& cal;
  const PerplexityOptions& po;
  const TextSpec& ts;
  const Model& m = lm.model;
  const ModelConfig& c = m.config;
  const int32_t bos = lm.tokenizer->sequence_bos();
  std::vector<int32_t> stream = token_stream(*lm.tokenizer, ctx.documents(ts));
  std::vector<int32_t> decode_ctx =
      sequence_tokens(stream, 0, std::min(cfg.decode_context, c.max_seq_len), bos);

  void run(const InductionRow& add_induction) {
    // Held-out activations for the reconstruction errors, and sequences for the attention
    // errors: the same windows.
    CalibrationOptions eo;
    eo.tokens = cfg.error_tokens;
    eo.seq_len = cfg.error_seq_len;
    eo.keys = "kv_head_reduction.error_seq_len and kv_head_reduction.error_tokens";
    eo.source = ts.path.string();
    CalibrationGrams held = collect_grams(m, bos, stream, eo);
    std::vector<std::vector<int32_t>> seqs;
    for (size_t off : plan_sequences(stream, held.seq_len, held.sequences, bos, ts.path.string()))
      seqs.push_back(sequence_tokens(stream, off, held.seq_len, bos));
    const double orig_speed = decode_tokens_per_second(m, decode_ctx, cfg.decode_tokens);
    const PerplexityResult base = perplexity(m, *lm.tokenizer, stream, po);
    t.main.add_row({model, ts.name, std::string("original"), int64_t(c.n_kv_heads), int64_t(0),
                    base.tokens_scored, base.mean_nll(), base.perplexity(), 0.0, 0.0, 0.0,
                    c.kv_bytes_per_token(), 1.0});
    for (int g : cfg.targets)
      for (ReduceMethod meth : cfg.methods) {
        const std::vector<int64_t> counts =
            needs_calibration(meth) ? cfg.calibration_tokens : std::vector<int64_t>{0};
        for (int64_t n : counts) {
          CalibrationGrams* cg = needs_calibration(meth) ? &cal.at(n) : nullptr;
          const ReducedModel r = reduce_kv_heads(m, g, meth, cg);
          if (add_induction) add_induction(method_name(meth), r.model, n);
          const PerplexityResult p = score(r, meth, g, n, held, seqs);
          if (n == counts.front())
            t.timing.add_row(
                {model, std::string(method_name(meth)), int64_t(g), int64_t(decode_ctx.size()),
                 decode_tokens_per_second(r.model, decode_ctx, cfg.decode_tokens), orig_speed});
          ctx.unit_done(fmt::format("{} {} -> {} KV heads{}: ppl {:.3f} (original {:.3f})", model,
                                    method_name(meth), g,
                                    n ? fmt::format(", {} calibration tokens", n) : "",
                                    p.perplexity(), base.perplexity()));
        }
      }
  }

  // A reduced model's rows: reconstruction and attention errors, perplexity, bytes.
  PerplexityResult score(const ReducedModel& r, ReduceMethod meth, int g, int64_t n,
                         CalibrationGrams& held, const std::vector<std::vector<int32_t>>& seqs) {
    const BasisErrors be = basis_errors(r, held, c);
    const std::vector<double> ae = attention_errors(m, r.model, seqs);
    double an = 0.0;
    for (double x : ae) an += x;
    const PerplexityResult p = perplexity(r.model, *lm.tokenizer, stream, po);
    const int64_t bytes = r.model.config.kv_bytes_per_token();
    t.main.add_row({model, ts.name, std::string(method_name(meth)), int64_t(g), n, p.tokens_scored,
                    p.mean_nll(), p.perplexity(), std::sqrt(be.k_pooled), std::sqrt(be.v_pooled),
                    an / double(ae.size()), bytes, double(bytes) / double(c.kv_bytes_per_token())});
    for (int l = 0; l < c.n_layers; ++l)
      t.layers.add_row({model, ts.name, std::string(method_name(meth)), int64_t(g), n, int64_t(l),
                        std::sqrt(be.k[size_t(l)]), std::sqrt(be.v[size_t(l)]), ae[size_t(l)]});
    return p;
  }
};

Tables run_reduction(const ReductionConfig& cfg, ExperimentContext& ctx) {
  ReductionTables t;
  PerplexityOptions po;
  po.window = cfg.window;
  po.stride = cfg.stride;
  po.max_tokens = cfg.eval_tokens;
  int per_text = 0;  // reduced models scored per model and text
  for (ReduceMethod meth : cfg.methods)
    per_text += int(cfg.targets.size()) *
                (needs_calibration(meth) ? int(cfg.calibration_tokens.size()) : 1);
  ctx.begin_units(int(ctx.models.size() * ctx.texts.size()) * per_text);
  for (const ModelSpec& ms : ctx.models) {
    const LoadedModel lm = ctx.load(ms);
    const ModelConfig& c = lm.model.config;
    for (int g : cfg.targets)
      KV_CHECK(g >= 1 && g <= c.n_kv_heads && c.n_kv_heads % g == 0,
               "{}: target {} does not divide model '{}''s {} KV heads", ctx.config_file.string(),
               g, ms.name, c.n_kv_heads);
    if (po.window > c.max_seq_len) po.window = c.max_seq_len;
    if (po.window == 0) po.window = c.default_seq_len();
    std::map<int64_t, CalibrationGrams> cal = calibration_grams(cfg, ctx, lm);
    const auto add_induction = [&](const std::string& method, const Model& rm, int64_t n) {
      ProbeOptions o = cfg.probe;
      o.seed = ctx.seed;
      const InductionSummary r = summarize_induction(rm, o);
      t.induction.add_row({ms.name, method, int64_t(rm.config.n_kv_heads), n, r.best_induction,
                           r.uniform, r.ratio(), int64_t(r.layer), r.copy_first, r.copy_later,
                           r.copy_drop()});
    };
    if (cfg.probe_models) add_induction("original", lm.model, 0);
    for (const TextSpec& ts : ctx.texts) {
      TextScoring ts_run{cfg, ctx, t, ms.name, lm, cal, po, ts};
      // The reductions' induction is probed once per model, with the first text.
      const bool probe = cfg.probe_models && &ts == &ctx.texts.front();
      ts_run.run(probe
                     ? std::function<void(const std::string&, const Model&, int64_t)>(add_induction)
                     : nullptr);
    }
  }
  ctx.after_tables.push_back(
      [](const std::filesystem::path& dir) { plot_reduction(dir / "reduction.csv", dir); });
  if (cfg.probe_models) return {t.main, t.layers, t.timing, t.induction};
  return {t.main, t.layers, t.timing};
}

}  // namespace

ExperimentKind kv_head_reduction_kind() {
  ExperimentKind k;
  k.name = "kv_head_reduction";
  k.summary = "fewer KV heads: mean-pool vs SVD of weights vs SVD of activations (RoPE-aware)";
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    ReductionConfig cfg;
    if (s.has("targets")) cfg.targets = s.list<int>("targets");
    if (s.has("methods")) {
      cfg.methods.clear();
      for (const std::string& m : s.list<std::string>("methods"))
        cfg.methods.push_back(parse_reduce_method(m, s.file() + ": kv_head_reduction.methods"));
    }
    YamlMap cal = s.map("calibration");
    cfg.calibration = parse_text_spec(cal);
    if (s.has("calibration_tokens")) {
      cfg.calibration_tokens.clear();
      for (int v : s.list<int>("calibration_tokens")) {
        KV_CHECK(v >= 1, "{}: kv_head_reduction.calibration_tokens must be >= 1, got {}", s.file(),
                 v);
        cfg.calibration_tokens.push_back(v);
      }
    }
    cfg.calibration_seq_len = s.get_at_least_or<int>("calibration_seq_len", 0, 0);
    cfg.eval_tokens = s.get_at_least_or<int64_t>("eval_tokens", 1, cfg.eval_tokens);
    cfg.window = s.get_at_least_or<int>("window", 0, 0);
    cfg.stride = s.get_at_least_or<int>("stride", 0, 0);
    cfg.error_tokens = s.get_at_least_or<int64_t>("error_tokens", 1, cfg.error_tokens);
    cfg.error_seq_len = s.get_at_least_or<int>("error_seq_len", 0, 0);
    cfg.decode_context = s.get_at_least_or<int>("decode_context", 1, cfg.decode_context);
    cfg.decode_tokens = s.get_at_least_or<int>("decode_tokens", 1, cfg.decode_tokens);
    if (s.has("probe")) {
      YamlMap p = s.map("probe");
      cfg.probe = parse_probe_options(p);
      cfg.probe_models = true;
    }
    return [cfg](ExperimentContext& ctx) { return run_reduction(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
