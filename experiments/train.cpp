// Experiment kind `train`: train a LLaMA model from scratch (or continue one) on the texts
// under `texts:`, with held-out perplexity every `eval_every` steps next to a unigram
// baseline, checkpoints in Hugging Face format that every other command loads, and
// resumption from the last checkpoint when the same config is run again.
//
//   train:
//     tokenizer: data/models/stories260K/tok512.bin
//     architecture: {dim: 64, hidden_dim: 172, n_layers: 4, n_heads: 8, n_kv_heads: 8,
//                    head_dim: 0, context: 1024, positional: rope, rope_theta: 10000,
//                    tied_embeddings: true}
//     eval_text: {path: ...}   # held-out text (keys as under texts:)
//     eval_tokens: 20000
//     eval_every: 100
//     steps: 1000, batch: 8, seq_len: 0 (= context), lr: 1e-3, min_lr: 1e-4, warmup: 100,
//     weight_decay: 0.1, clip: 1.0
//     repeat_share: 0.0        # share of sequences in which a passage recurs later
//     random_blocks: {share: 0, min_len: 8, max_len: 64, token_lo: -1, token_hi: 0,
//                     seq_len: 0, embedded: 0}
//                              # share of sequences that are a random-token block repeated
//     probe: {block: 0, repeats: 4, probes: 4}   # when present: induction.csv,
//                              # the retrieval probe and copy loss at every evaluation
//     init: ""                 # a model of the same architecture to start from ("" = fresh)
//     checkpoint: ""           # directory; "" = RESULTS/checkpoints/NAME (git-ignored)
//     checkpoint_every: 200
//     stop_after: 0            # steps in this invocation (train in slices); 0 = to `steps`
//     stop_at: 0               # last step trained, on the schedule of `steps` (a stage cut
//                              # short, e.g. for a curriculum); 0 = `steps`
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "experiments.hpp"
#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "kvscope/train/checkpoint.hpp"
#include "kvscope/train/trainer.hpp"
#include "retrieval_config.hpp"
#include "train_config.hpp"

namespace kvscope {

namespace {

struct TrainConfig {
  std::string tokenizer;
  ModelConfig arch;
  TextSpec eval_text;
  int64_t eval_tokens = 20000;
  int eval_every = 100;
  train::TrainOptions opt;
  std::string checkpoint;
  std::string init;  // start from this model's weights instead of fresh ones
  int checkpoint_every = 200;
  int stop_after = 0;           // steps in this invocation; 0 = up to `steps`
  int stop_at = 0;              // train up to this step of the `steps` schedule; 0 = `steps`
  bool induction_eval = false;  // `probe:` given
  ProbeOptions probe;
  nlohmann::json fingerprint;  // what must match for a checkpoint to be resumed
};

// Unigram model of the training stream with add-one smoothing: NLL per token of `eval`.
double unigram_nll(std::span<const int32_t> train, const std::vector<std::vector<int32_t>>& eval,
                   int vocab) {
  std::vector<double> count(size_t(vocab), 1.0);
  for (int32_t t : train) count[size_t(t)] += 1;
  const double total = double(train.size()) + vocab;
  double nll = 0;
  int64_t n = 0;
  for (const auto& s : eval)
    for (size_t i = 1; i < s.size(); ++i, ++n) nll -= std::log(count[size_t(s[i])] / total);
  return nll / double(n);
}

// Fills the random blocks' defaults from the model and checks them against it; the probe
// then asks about the ids the blocks taught.
void resolve_random_blocks(TrainConfig& cfg, const ModelConfig& c, const std::string& file) {
  train::RandomBlocks& rb = cfg.opt.random_blocks;
  if (rb.share <= 0) return;
  if (rb.token_lo < 0) rb.token_lo = default_token_lo(c);
  if (rb.token_hi == 0) rb.token_hi = c.vocab_size;
  KV_CHECK(rb.token_lo < rb.token_hi && rb.token_hi <= c.vocab_size &&
               (c.bos_id < rb.token_lo || c.bos_id >= rb.token_hi) &&
               (c.eos_id < rb.token_lo || c.eos_id >= rb.token_hi),
           "{}: train.random_blocks token ids [{}, {}) must lie inside the vocabulary [0, {}) "
           "and leave out BOS {} and EOS {}",
           file, rb.token_lo, rb.token_hi, c.vocab_size, c.bos_id, c.eos_id);
  if (rb.seq_len == 0) rb.seq_len = cfg.opt.seq_len;
  KV_CHECK(rb.seq_len <= c.max_seq_len,
           "{}: train.random_blocks.seq_len {} exceeds the "
           "context {}",
           file, rb.seq_len, c.max_seq_len);
  KV_CHECK(2 * rb.max_len <= rb.seq_len - 1,
           "{}: train.random_blocks.max_len {} leaves fewer "
           "than two copies in a sequence of {} tokens",
           file, rb.max_len, rb.seq_len);
  // Tokens never seen in a block (or at all) cannot be matched, and would measure that
  // instead of copying.
  if (cfg.probe.token_lo < 0 && cfg.probe.token_hi == 0)
    cfg.probe.token_lo = rb.token_lo, cfg.probe.token_hi = rb.token_hi;
}

// The weights of train.init (a curriculum in stages: each stage starts from the previous
// one's). Its own layout first: what the trainer cannot compute (biases, q/k norms,
// Gemma's extras) is refused by name instead of being dropped by params_from_model. Then
// every tensor's shape, and the positional encoding the weights were trained with (a
// llama2.c checkpoint's Q/K rows are in adjacent-pair RoPE order, the trainer's in
// rotate-half order).
std::vector<float> weights_from_init(const TrainConfig& cfg, const train::Layout& L,
                                     ExperimentContext& ctx) {
  const ModelConfig& c = cfg.arch;
  KV_CHECK(std::filesystem::exists(cfg.init),
           "{}: train.init '{}' does not exist (an earlier stage not trained yet?)",
           ctx.config_file.string(), cfg.init);
  const Model from = load_model(cfg.init);
  const ModelConfig& f = from.config;
  const train::Layout Lf = train::make_layout(f);
  bool same = Lf.tensors.size() == L.tensors.size() && f.positional == c.positional &&
              (f.positional != PositionalKind::kRope ||
               (f.rope_layout == c.rope_layout && f.rope_theta == c.rope_theta));
  for (size_t i = 0; same && i < L.tensors.size(); ++i)
    same = Lf.tensors[i].name == L.tensors[i].name && Lf.tensors[i].rows == L.tensors[i].rows &&
           Lf.tensors[i].cols == L.tensors[i].cols;
  KV_CHECK(same,
           "{}: train.init '{}' has another architecture (dim {}, hidden {}, layers {}, heads "
           "{}/{}, head_dim {}, vocab {}, {} {} theta {}) than train.architecture (dim {}, "
           "hidden {}, layers {}, heads {}/{}, head_dim {}, vocab {}, {} {} theta {})",
           ctx.config_file.string(), cfg.init, f.dim, f.hidden_dim, f.n_layers, f.n_heads,
           f.n_kv_heads, f.head_dim, f.vocab_size, positional_name(f.positional),
           rope_layout_name(f.rope_layout), f.rope_theta, c.dim, c.hidden_dim, c.n_layers,
           c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, positional_name(c.positional),
           rope_layout_name(c.rope_layout), c.rope_theta);
  for (const std::filesystem::path& p : from.files)
    ctx.manifest->inputs.push_back(file_record("init", p));
  ctx.log(fmt::format("starting from the weights of {}", cfg.init));
  return train::params_from_model<float>(from, L);
}

// Where training starts: the checkpoint of an earlier invocation of the same config, an
// earlier stage's weights, or random ones.
struct TrainStart {
  std::vector<float> w;
  train::AdamState adam;
  int step = 0;
  nlohmann::json history = {{"loss", nlohmann::json::array()},
                            {"eval", nlohmann::json::array()},
                            {"induction", nlohmann::json::array()},
                            {"tokens", 0},
                            {"block_tokens", 0}};
};

TrainStart start_training(const TrainConfig& cfg, const train::Layout& L,
                          const std::filesystem::path& ckdir, ExperimentContext& ctx) {
  TrainStart st;
  if (auto ck = train::load_checkpoint(ckdir, L)) {
    KV_CHECK(ck->state.value("fingerprint", nlohmann::json()) == cfg.fingerprint,
             "{}: the checkpoint in {} was made by a different config (architecture, data or "
             "options); delete it or set train.checkpoint",
             ctx.config_file.string(), ckdir.string());
    st.w = std::move(ck->w), st.adam = std::move(ck->adam);
    st.step = ck->state.value("step", 0);
    st.history = ck->state["history"];
    ctx.log(fmt::format("resuming from {} at step {}", ckdir.string(), st.step));
  } else if (!cfg.init.empty()) {
    st.w = weights_from_init(cfg, L, ctx);
  } else {
    st.w = train::init_params(L, ctx.seed);
  }
  return st;
}

// The latest evaluation's induction summary, for the progress log.
std::string induction_note(const nlohmann::json& history) {
  const auto& r = history["induction"].back();
  return fmt::format(", induction {:.1f}x uniform (layer {}), copy drop {:.0f}%",
                     r["induction"].get<double>() / r["uniform"].get<double>(),
                     r["layer"].get<int>(),
                     100 * (1 - r["copy_later"].get<double>() / r["copy_first"].get<double>()));
}

// loss.csv, eval.csv and (with the probe) induction.csv from a run's whole history.
Tables history_tables(const nlohmann::json& history, double unigram, bool induction) {
  Table loss("loss", {{"step", Column::Int},
                      {"lr", Column::Float},
                      {"loss", Column::Float},
                      {"grad_norm", Column::Float}});
  for (const auto& r : history["loss"])
    loss.add_row({r[0].get<int64_t>(), r[1].get<double>(), r[2].get<double>(), r[3].get<double>()});
  Table ev("eval", {{"step", Column::Int},
                    {"heldout_nll", Column::Float},
                    {"heldout_ppl", Column::Float},
                    {"unigram_ppl", Column::Float}});
  for (const auto& r : history["eval"])
    ev.add_row(
        {r[0].get<int64_t>(), r[1].get<double>(), std::exp(r[1].get<double>()), std::exp(unigram)});
  if (!induction) return {loss, ev};
  Table ind("induction", {{"step", Column::Int},
                          {"tokens", Column::Int},
                          {"block_tokens", Column::Int},
                          {"best_induction", Column::Float},
                          {"uniform", Column::Float},
                          {"induction_ratio", Column::Float},
                          {"best_layer", Column::Int},
                          {"best_kv_head", Column::Int},
                          {"best_echo", Column::Float},
                          {"copy_nll_first", Column::Float},
                          {"copy_nll_later", Column::Float},
                          {"copy_drop", Column::Float},
                          {"best_previous", Column::Float},
                          {"best_previous_layer", Column::Int}});
  for (const auto& r : history["induction"]) {
    const double ind_score = r["induction"], uni = r["uniform"];
    const double first = r["copy_first"], later = r["copy_later"];
    ind.add_row({r["step"].get<int64_t>(), r["tokens"].get<int64_t>(),
                 r["block_tokens"].get<int64_t>(), ind_score, uni, ind_score / uni,
                 r["layer"].get<int64_t>(), r["kv_head"].get<int64_t>(), r["echo"].get<double>(),
                 first, later, 1.0 - later / first, r["previous"].get<double>(),
                 r["previous_layer"].get<int64_t>()});
  }
  return {loss, ev, ind};
}

Tables run_train(TrainConfig cfg, ExperimentContext& ctx) {
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(cfg.tokenizer);
  ctx.manifest->inputs.push_back(file_record("tokenizer", cfg.tokenizer));
  ModelConfig& c = cfg.arch;
  c.vocab_size = tok->vocab_size();
  c.bos_id = tok->bos_id, c.eos_id = tok->eos_id;
  validate(c, ctx.config_file.string() + ": train.architecture");
  const train::Layout L = train::make_layout(c);
  train::TrainOptions& o = cfg.opt;
  if (o.seq_len <= 0) o.seq_len = c.max_seq_len;
  KV_CHECK(o.seq_len <= c.max_seq_len, "{}: train.seq_len {} exceeds the context {}",
           ctx.config_file.string(), o.seq_len, c.max_seq_len);
  o.seed = ctx.seed;
  resolve_random_blocks(cfg, c, ctx.config_file.string());
  std::vector<int32_t> stream;
  for (const TextSpec& ts : ctx.texts) {
    const std::vector<int32_t> s = token_stream(*tok, ctx.documents(ts));
    stream.insert(stream.end(), s.begin(), s.end());
  }
  const std::vector<int32_t> eval_stream = token_stream(*tok, ctx.documents(cfg.eval_text));
  const auto held = train::heldout_windows(eval_stream, c.bos_id, o.seq_len, cfg.eval_tokens);
  KV_CHECK(!held.empty(), "{}: the eval text has fewer than {} tokens", ctx.config_file.string(),
           o.seq_len);
  const double unigram = unigram_nll(stream, held, c.vocab_size);

  const std::filesystem::path ckdir = cfg.checkpoint.empty()
                                          ? ctx.out_dir.parent_path() / "checkpoints" / ctx.name
                                          : std::filesystem::path(cfg.checkpoint);
  TrainStart st = start_training(cfg, L, ckdir, ctx);
  std::vector<float>& w = st.w;
  nlohmann::json& history = st.history;
  const int start = st.step;
  ctx.log(fmt::format("{} parameters, {} training tokens, unigram held-out ppl {:.2f}", L.size,
                      stream.size(), std::exp(unigram)));
  auto eval = [&](int step) {
    const double nll = train::mean_loss(L, w, held);
    history["eval"].push_back({step, nll});
    if (cfg.induction_eval) {
      // The retrieval probe and the copy loss on it: induction forming shows in both.
      const Model m = train::model_from_params(L, w, ctx.name);
      const InductionSummary r = summarize_induction(m, cfg.probe);
      history["induction"].push_back({{"step", step},
                                      {"tokens", history.value("tokens", int64_t(0))},
                                      {"block_tokens", history.value("block_tokens", int64_t(0))},
                                      {"induction", r.best_induction},
                                      {"uniform", r.uniform},
                                      {"layer", r.layer},
                                      {"kv_head", r.kv_head},
                                      {"echo", r.best_echo},
                                      {"copy_first", r.copy_first},
                                      {"copy_later", r.copy_later},
                                      {"previous", r.best_previous},
                                      {"previous_layer", r.previous_layer}});
    }
    return nll;
  };
  if (start == 0) eval(0);
  const auto t0 = std::chrono::steady_clock::now();
  double secs = 0;
  int64_t tokens = 0;
  const int last = cfg.stop_at > 0 ? std::min(o.steps, cfg.stop_at) : o.steps;
  const int end = cfg.stop_after > 0 ? std::min(last, start + cfg.stop_after) : last;
  for (int step = start; step < end; ++step) {
    ctx.step("training step", step - start, end - start);
    int64_t block_tokens = 0;
    const train::StepStats s = train::train_step(
        L, o, w, st.adam, train::batch_at(stream, c.bos_id, o, step, &block_tokens), step);
    history["tokens"] = history.value("tokens", int64_t(0)) + s.tokens;
    history["block_tokens"] = history.value("block_tokens", int64_t(0)) + block_tokens;
    secs += s.seconds, tokens += s.tokens;
    history["loss"].push_back({step, s.lr, s.loss, s.grad_norm});
    // Evaluate on the cadence and at the end of training; checkpoint on the cadence and
    // wherever this invocation stops (stop_after), so a sliced run equals a whole one.
    if ((step + 1) % cfg.eval_every == 0 || step + 1 == o.steps || step + 1 == last) {
      const double nll = eval(step + 1);
      const double el =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ctx.log(fmt::format("step {}/{}: loss {:.3f}, held-out ppl {:.2f}{}, {:.0f} tok/s, ETA {}",
                          step + 1, o.steps, s.loss, std::exp(nll),
                          cfg.induction_eval ? induction_note(history) : "", double(tokens) / secs,
                          mmss(el / double(step + 1 - start) * double(o.steps - step - 1))));
    }
    if ((step + 1) % cfg.checkpoint_every == 0 || step + 1 == end) {
      const nlohmann::json state = {
          {"step", step + 1}, {"fingerprint", cfg.fingerprint}, {"history", history}};
      train::save_checkpoint(ckdir, L, w, st.adam, state, cfg.tokenizer);
    }
  }
  Tables out = history_tables(history, unigram, cfg.induction_eval);
  Table timing("timing_train", {{"steps_timed", Column::Int},
                                {"tokens", Column::Int},
                                {"seconds", Column::Float},
                                {"tokens_per_second", Column::Float}});
  timing.add_row({int64_t(o.steps - start), tokens, secs, secs > 0 ? double(tokens) / secs : 0.0});
  out.push_back(timing);
  ctx.manifest->extra["checkpoint"] = ckdir.string();
  ctx.manifest->extra["parameters"] = L.size;
  ctx.after_tables.push_back(
      [title = training_title(ctx.manifest->config)](const std::filesystem::path& dir) {
        plot_training(dir / "loss.csv", dir / "eval.csv", dir, title);
      });
  if (cfg.induction_eval)
    ctx.after_tables.push_back([name = ctx.name](const std::filesystem::path& dir) {
      plot_induction(dir / "induction.csv", dir, name);
    });
  return out;
}

}  // namespace

train::TrainOptions parse_train_options(YamlMap& s, const train::TrainOptions& defaults) {
  train::TrainOptions o = defaults;
  o.steps = s.get_at_least_or<int>("steps", 1, o.steps);
  o.batch = s.get_at_least_or<int>("batch", 1, o.batch);
  o.seq_len = s.get_at_least_or<int>("seq_len", 0, o.seq_len);
  o.lr = s.get_or<double>("lr", o.lr);
  o.min_lr = s.get_or<double>("min_lr", o.min_lr);
  o.warmup = s.get_at_least_or<int>("warmup", 1, o.warmup);
  o.weight_decay = s.get_or<double>("weight_decay", o.weight_decay);
  o.clip = s.get_or<double>("clip", o.clip);
  KV_CHECK(o.lr > 0 && o.min_lr >= 0 && o.min_lr <= o.lr,
           "{}: {} must be > 0 and 0 <= min_lr <= lr (got {}, {})", s.file(), s.key_path("lr"),
           o.lr, o.min_lr);
  return o;
}

ExperimentKind train_kind() {
  ExperimentKind k;
  k.name = "train";
  k.splits = false;  // one process: its loop is not split across MPI ranks
  k.summary = "train a LLaMA model on the texts; checkpoints in Hugging Face format, resumable";
  k.needs_models = false;
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    TrainConfig cfg;
    cfg.tokenizer = s.get_path("tokenizer").string();
    KV_CHECK(std::filesystem::exists(cfg.tokenizer), "{}: train.tokenizer '{}' does not exist",
             s.file(), cfg.tokenizer);
    YamlMap a = s.map("architecture");
    ModelConfig& c = cfg.arch;
    c.dim = a.get_at_least<int>("dim", 2);
    c.hidden_dim = a.get_at_least<int>("hidden_dim", 1);
    c.n_layers = a.get_at_least<int>("n_layers", 1);
    c.n_heads = a.get_at_least<int>("n_heads", 1);
    c.n_kv_heads = a.get_at_least_or<int>("n_kv_heads", 1, c.n_heads);
    c.head_dim = a.get_at_least_or<int>("head_dim", 0, 0);
    if (c.head_dim == 0) c.head_dim = c.dim / c.n_heads;
    c.max_seq_len = a.get_at_least<int>("context", 2);
    const std::string pos = a.get_choice_or("positional", {"rope", "alibi", "none"}, "rope");
    c.positional = pos == "rope"    ? PositionalKind::kRope
                   : pos == "alibi" ? PositionalKind::kAlibi
                                    : PositionalKind::kNone;
    c.rope_layout = RopeLayout::kRotateHalf;  // what Hugging Face checkpoints mean
    c.rope_theta = a.get_or<double>("rope_theta", 10000.0);
    c.tied_embeddings = a.get_or<bool>("tied_embeddings", true);
    c.vocab_size = 1;  // from the tokenizer at run time
    YamlMap e = s.map("eval_text");
    cfg.eval_text = parse_text_spec(e);
    cfg.eval_tokens = s.get_at_least_or<int64_t>("eval_tokens", 1, cfg.eval_tokens);
    cfg.eval_every = s.get_at_least_or<int>("eval_every", 1, cfg.eval_every);
    train::TrainOptions defaults;
    defaults.seq_len = 0;  // the context
    cfg.opt = parse_train_options(s, defaults);
    train::TrainOptions& o = cfg.opt;
    o.repeat_share = s.get_or<double>("repeat_share", 0.0);
    KV_CHECK(o.repeat_share >= 0 && o.repeat_share <= 1,
             "{}: train.repeat_share must be in [0, 1], got {}", s.file(), o.repeat_share);
    if (s.has("random_blocks")) {
      YamlMap r = s.map("random_blocks");
      train::RandomBlocks& rb = o.random_blocks;
      rb.share = r.get<double>("share");
      KV_CHECK(rb.share >= 0 && rb.share <= 1,
               "{}: train.random_blocks.share must be in "
               "[0, 1], got {}",
               s.file(), rb.share);
      rb.min_len = r.get_at_least<int>("min_len", 1);
      rb.max_len = r.get_at_least<int>("max_len", rb.min_len);
      rb.token_lo = r.get_at_least_or<int>("token_lo", -1, -1);
      rb.token_hi = r.get_at_least_or<int>("token_hi", 0, 0);
      rb.seq_len = r.get_at_least_or<int>("seq_len", 0, 0);
      rb.embedded = r.get_or<double>("embedded", 0.0);
      KV_CHECK(rb.embedded >= 0 && rb.embedded <= 1,
               "{}: train.random_blocks.embedded must be "
               "in [0, 1], got {}",
               s.file(), rb.embedded);
    }
    if (s.has("probe")) {
      YamlMap p = s.map("probe");
      cfg.probe = parse_probe_options(p);
      cfg.induction_eval = true;
    }
    cfg.checkpoint = s.get_path_or("checkpoint", "").string();
    // Checked when the run starts, not here: `kvscope tables` reads every config before
    // running any, and a later stage's init is an earlier stage's checkpoint.
    cfg.init = s.get_path_or("init", "").string();
    cfg.checkpoint_every = s.get_at_least_or<int>("checkpoint_every", 1, cfg.checkpoint_every);
    cfg.stop_after = s.get_at_least_or<int>("stop_after", 0, 0);
    cfg.stop_at = s.get_at_least_or<int>("stop_at", 0, 0);
    // Everything but `steps` (raising it continues a finished run, on a new schedule), the
    // eval/checkpoint cadence and stop_after must match for a checkpoint to be resumed.
    cfg.fingerprint = s.to_json();
    for (const char* key :
         {"steps", "eval_every", "checkpoint_every", "eval_tokens", "stop_after", "stop_at"})
      cfg.fingerprint.erase(key);
    return [cfg](ExperimentContext& ctx) { return run_train(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
