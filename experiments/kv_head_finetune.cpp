// Experiment kind `kv_head_finetune` (paper A, the "after training" column of Table 4):
// reduce every model's KV heads with each initialisation (kv_reduction.hpp), then train the
// reduced model on `train_texts`, all weights or only the attention weights, with
// held-out perplexity every `eval_every` steps (the recovery curves). Every run sees the
// same batches in the same order, so the curves differ only by their initialisation. The
// original model, fine-tuned the same way, is the control: it separates recovering from
// the reduction from merely training longer on that text.
//
//   kv_head_finetune:
//     targets: [4, 2]                 # KV heads after reduction (must divide the model's)
//     methods: [mean_pool, svd_w, svd_a]
//     calibration: {path: ..., name: ...}   # text for the SVD-a Grams
//     calibration_tokens: 16384       # tokens for the SVD-a Grams
//     calibration_seq_len: 0          # their sequence length (0: the context, at most 2048)
//     train_texts: [{path: ...}, ...] # fine-tuning text, concatenated (default: calibration)
//     trainable: [all]                # all | attention (Q, K, V, O, k_compress, q_project)
//     control: true                   # also fine-tune the original model
//     steps: 200, batch: 4, seq_len: 256 (0 = the context, at most 2048), lr: 1e-3, min_lr: 1e-4,
//     warmup: 20, weight_decay: 0.0, clip: 1.0
//     eval_every: 25                  # held-out evaluation cadence (steps)
//     eval_tokens: 8192               # held-out tokens: curves (seq_len windows) and the
//                                     # before/after perplexity (windows of the
//                                     # context, at most 2048)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "experiments.hpp"
#include "kvscope/kv/calibration.hpp"
#include "kvscope/kv/kv_reduction.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "kvscope/train/trainer.hpp"
#include "train_config.hpp"

namespace kvscope {

namespace {

struct FinetuneConfig {
  std::vector<int> targets = {2};
  std::vector<ReduceMethod> methods = {ReduceMethod::kMeanPool, ReduceMethod::kSvdW,
                                       ReduceMethod::kSvdA};
  TextSpec calibration;
  int64_t calibration_tokens = 16384;
  int calibration_seq_len = 0;
  std::vector<TextSpec> train_texts;  // empty: the calibration text
  std::vector<std::string> trainable = {"all"};
  bool control = true;
  train::TrainOptions opt;
  int eval_every = 25;
  int64_t eval_tokens = 8192;
};

// One model to fine-tune: the original (control) or a reduction of it.
struct Variant {
  std::string method;  // "original" or a method name
  int kv_heads = 0;
  std::optional<ReduceMethod> reduce;  // none: the original model
};

struct FinetuneTables {
  Table curves{"recovery",
               {{"model", Column::String},
                {"text", Column::String},
                {"method", Column::String},
                {"kv_heads", Column::Int},
                {"trainable", Column::String},
                {"step", Column::Int},
                {"tokens_trained", Column::Int},
                {"heldout_nll", Column::Float},
                {"heldout_ppl", Column::Float}}};
  Table after{"after_training",
              {{"model", Column::String},
               {"text", Column::String},
               {"method", Column::String},
               {"kv_heads", Column::Int},
               {"trainable", Column::String},
               {"tokens_trained", Column::Int},
               {"tokens_scored", Column::Int},
               {"perplexity_init", Column::Float},
               {"perplexity_trained", Column::Float},
               {"kv_bytes_per_token", Column::Int},
               {"kv_bytes_ratio", Column::Float}}};
  Table timing{"timing_finetune",
               {{"model", Column::String},
                {"method", Column::String},
                {"kv_heads", Column::Int},
                {"trainable", Column::String},
                {"tokens", Column::Int},
                {"seconds", Column::Float},
                {"tokens_per_second", Column::Float}}};
};

// A held-out text: seq_len windows for the curves, the stream for perplexity.
struct Held {
  std::string name;
  std::vector<int32_t> stream;
  std::vector<std::vector<int32_t>> windows;
};

// One model's fine-tuning runs: every variant, every set of trainable weights.
struct ModelFinetune {
  const FinetuneConfig& cfg;
  ExperimentContext& ctx;
  FinetuneTables& t;
  const std::string& model;
  const LoadedModel& lm;
  train::TrainOptions mo;
  const std::vector<int32_t>& train_stream;
  const std::vector<Held>& held;
  // Progress over the whole grid, for the ETA.
  const std::chrono::steady_clock::time_point t0;
  int64_t& steps_done;
  const int64_t total_steps;
  const int32_t bos = lm.tokenizer->sequence_bos();

  // Trains `which` weights of `start` (variant v); `before`: its perplexity per held text.
  void run(const Variant& v, const Model& start, const std::string& which,
           const std::vector<PerplexityResult>& before, const PerplexityOptions& po) {
    const train::Layout L = train::make_layout(start.config);
    std::vector<float> w = train::params_from_model<float>(start, L);
    mo.trainable = which == "attention" ? train::attention_mask(L) : std::vector<uint8_t>{};
    train::AdamState adam;
    int64_t tokens = 0;
    double secs = 0;
    auto eval = [&](int step) {
      for (const Held& h : held) {
        const double nll = train::mean_loss(L, w, h.windows);
        t.curves.add_row({model, h.name, v.method, int64_t(v.kv_heads), which, int64_t(step),
                          tokens, nll, std::exp(nll)});
      }
    };
    eval(0);
    const std::string what =
        fmt::format("{} {} -> {} KV heads, {} weights: step", model, v.method, v.kv_heads, which);
    for (int step = 0; step < mo.steps; ++step) {
      ctx.step(what, step, mo.steps);
      const train::StepStats s =
          train::train_step(L, mo, w, adam, train::batch_at(train_stream, bos, mo, step), step);
      tokens += s.tokens, secs += s.seconds, ++steps_done;
      if ((step + 1) % cfg.eval_every == 0 || step + 1 == mo.steps) eval(step + 1);
    }
    ctx.step(what, mo.steps, mo.steps);
    const Model trained = train::model_from_params(L, w, start.name + ":finetuned");
    for (size_t hi = 0; hi < held.size(); ++hi) {
      const Held& h = held[hi];
      const PerplexityResult& p0 = before[hi];
      const PerplexityResult p1 = perplexity(trained, *lm.tokenizer, h.stream, po);
      const int64_t bytes = start.config.kv_bytes_per_token();
      t.after.add_row({model, h.name, v.method, int64_t(v.kv_heads), which, tokens,
                       p1.tokens_scored, p0.perplexity(), p1.perplexity(), bytes,
                       double(bytes) / double(lm.model.config.kv_bytes_per_token())});
      const double el =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ctx.log(fmt::format("{} {} -> {} KV heads, {} weights: {} ppl {:.2f} -> {:.2f}, ETA {}",
                          model, v.method, v.kv_heads, which, h.name, p0.perplexity(),
                          p1.perplexity(),
                          mmss(el / double(steps_done) * double(total_steps - steps_done))));
    }
    t.timing.add_row({model, v.method, int64_t(v.kv_heads), which, tokens, secs,
                      secs > 0 ? double(tokens) / secs : 0.0});
  }
};

// The fine-tuning stream: the train texts, or the calibration text when none is given.
std::vector<int32_t> train_stream_of(const FinetuneConfig& cfg, ExperimentContext& ctx,
                                     const Tokenizer& tok) {
  std::vector<int32_t> train_stream;
  for (const TextSpec& ts :
       cfg.train_texts.empty() ? std::vector<TextSpec>{cfg.calibration} : cfg.train_texts) {
    const std::vector<int32_t> s = token_stream(tok, ctx.documents(ts));
    train_stream.insert(train_stream.end(), s.begin(), s.end());
  }
  return train_stream;
}

Tables run_finetune(FinetuneConfig cfg, ExperimentContext& ctx) {
  FinetuneTables t;
  train::TrainOptions& o = cfg.opt;
  o.seed = ctx.seed;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t runs_per_model =
      int64_t(cfg.trainable.size()) *
      ((cfg.control ? 1 : 0) + int64_t(cfg.targets.size()) * int64_t(cfg.methods.size()));
  const int64_t total_steps = int64_t(ctx.models.size()) * runs_per_model * o.steps;
  int64_t steps_done = 0;
  for (const ModelSpec& ms : ctx.models) {
    const LoadedModel lm = ctx.load(ms);
    const Model& m = lm.model;
    const ModelConfig& c = m.config;
    const int32_t bos = lm.tokenizer->sequence_bos();
    const std::string where = ctx.config_file.string() + ": kv_head_finetune";
    for (int g : cfg.targets)
      KV_CHECK(g >= 1 && g <= c.n_kv_heads && c.n_kv_heads % g == 0,
               "{}.targets: {} does not divide model '{}''s {} KV heads", where, g, ms.name,
               c.n_kv_heads);
    train::TrainOptions mo = o;
    if (mo.seq_len <= 0) mo.seq_len = c.default_seq_len();
    KV_CHECK(mo.seq_len <= c.max_seq_len, "{}.seq_len {} exceeds model '{}''s context {}", where,
             mo.seq_len, ms.name, c.max_seq_len);
    const std::vector<int32_t> cal_stream =
        token_stream(*lm.tokenizer, ctx.documents(cfg.calibration));
    const std::vector<int32_t> train_stream = train_stream_of(cfg, ctx, *lm.tokenizer);
    KV_CHECK(int64_t(train_stream.size()) > mo.seq_len,
             "{}: the fine-tuning text has {} tokens, fewer than seq_len {}", where,
             train_stream.size(), mo.seq_len);
    std::optional<CalibrationGrams> grams;  // only the calibrated methods read them
    if (std::any_of(cfg.methods.begin(), cfg.methods.end(), needs_calibration)) {
      CalibrationOptions co;
      co.tokens = cfg.calibration_tokens;
      co.seq_len = cfg.calibration_seq_len;
      co.keys = "kv_head_finetune.calibration_seq_len and kv_head_finetune.calibration_tokens";
      co.source = cfg.calibration.path.string();
      grams = collect_grams(m, bos, cal_stream, co);
    }
    std::vector<Variant> variants;
    if (cfg.control) variants.push_back({"original", c.n_kv_heads, std::nullopt});
    for (int g : cfg.targets)
      for (ReduceMethod meth : cfg.methods) variants.push_back({method_name(meth), g, meth});
    std::vector<Held> held;
    for (const TextSpec& ts : ctx.texts) {
      Held h{ts.name, token_stream(*lm.tokenizer, ctx.documents(ts)), {}};
      h.windows = train::heldout_windows(h.stream, bos, mo.seq_len, cfg.eval_tokens);
      KV_CHECK(!h.windows.empty(), "{}: text '{}' has fewer than seq_len {} tokens", where, ts.name,
               mo.seq_len);
      held.push_back(std::move(h));
    }
    PerplexityOptions po;
    po.max_tokens = cfg.eval_tokens;
    ModelFinetune run{cfg,          ctx,  t,  ms.name,    lm,         mo,
                      train_stream, held, t0, steps_done, total_steps};
    for (const Variant& v : variants) {
      // One reduced model at a time, so memory holds two models whatever the grid.
      std::optional<ReducedModel> reduced;
      if (v.reduce) reduced = reduce_kv_heads(m, v.kv_heads, *v.reduce, grams ? &*grams : nullptr);
      const Model& start = reduced ? reduced->model : m;
      std::vector<PerplexityResult> before;  // per text; the same for every `trainable`
      for (const Held& h : held) before.push_back(perplexity(start, *lm.tokenizer, h.stream, po));
      for (const std::string& which : cfg.trainable) run.run(v, start, which, before, po);
    }
  }
  ctx.after_tables.push_back(
      [](const std::filesystem::path& dir) { plot_recovery(dir / "recovery.csv", dir); });
  return {t.curves, t.after, t.timing};
}

}  // namespace

ExperimentKind kv_head_finetune_kind() {
  ExperimentKind k;
  k.name = "kv_head_finetune";
  k.splits = false;  // one process: its loop is not split across MPI ranks
  k.summary = "fewer KV heads, then fine-tuning: recovery curves per initialisation";
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    FinetuneConfig cfg;
    if (s.has("targets")) cfg.targets = s.list<int>("targets");
    if (s.has("methods")) {
      cfg.methods.clear();
      for (const std::string& m : s.list<std::string>("methods"))
        cfg.methods.push_back(parse_reduce_method(m, s.file() + ": kv_head_finetune.methods"));
    }
    YamlMap cal = s.map("calibration");
    cfg.calibration = parse_text_spec(cal);
    cfg.calibration_tokens =
        s.get_at_least_or<int64_t>("calibration_tokens", 1, cfg.calibration_tokens);
    cfg.calibration_seq_len = s.get_at_least_or<int>("calibration_seq_len", 0, 0);
    if (s.has("train_texts"))
      for (YamlMap& t : s.list_of_maps("train_texts"))
        cfg.train_texts.push_back(parse_text_spec(t));
    if (s.has("trainable")) cfg.trainable = s.list<std::string>("trainable");
    for (const std::string& t : cfg.trainable)
      KV_CHECK(t == "all" || t == "attention",
               "{}: kv_head_finetune.trainable: unknown value '{}' (expected all or attention)",
               s.file(), t);
    cfg.control = s.get_or<bool>("control", cfg.control);
    train::TrainOptions defaults;  // a short run from a trained model
    defaults.steps = 200, defaults.batch = 4, defaults.seq_len = 256, defaults.lr = 1e-3;
    defaults.min_lr = 1e-4, defaults.warmup = 20, defaults.weight_decay = 0.0;
    cfg.opt = parse_train_options(s, defaults);
    cfg.eval_every = s.get_at_least_or<int>("eval_every", 1, cfg.eval_every);
    cfg.eval_tokens = s.get_at_least_or<int64_t>("eval_tokens", 1, cfg.eval_tokens);
    return [cfg](ExperimentContext& ctx) { return run_finetune(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
