// Experiment kind `perplexity`: every model x every text, sliding-window perplexity
// (windows and BOS handling: include/kvscope/runtime/perplexity.hpp).
//
//   perplexity:
//     window: 0         # tokens per window incl. BOS; 0 = each model's context length
//     stride: 0         # new tokens scored per window after the first; 0 = window / 2
//     max_tokens: 0     # score at most this many tokens per text; 0 = all
#include <nlohmann/json.hpp>

#include "experiments.hpp"
#include "kvscope/runtime/perplexity.hpp"

namespace kvscope {

namespace {

struct PerplexityConfig {
  PerplexityOptions opt;
};

Tables run_perplexity(const PerplexityConfig& cfg, ExperimentContext& ctx) {
  Table t("perplexity", {{"model", Column::String},
                         {"text", Column::String},
                         {"window", Column::Int},
                         {"stride", Column::Int},
                         {"tokens_scored", Column::Int},
                         {"windows", Column::Int},
                         {"bytes_scored", Column::Int},
                         {"mean_nll", Column::Float},
                         {"perplexity", Column::Float},
                         {"bits_per_byte", Column::Float}});
  nlohmann::json timings = nlohmann::json::array();
  ctx.begin_units(int(ctx.models.size() * ctx.texts.size()));
  for (const ModelSpec& ms : ctx.models) {
    const LoadedModel lm = ctx.load(ms);
    for (const TextSpec& ts : ctx.texts) {
      const std::vector<std::string> docs = ctx.documents(ts);
      const std::vector<int32_t> stream = token_stream(*lm.tokenizer, docs);
      PerplexityOptions o = cfg.opt;
      if (o.window > lm.model.config.max_seq_len) {
        ctx.log(fmt::format("{}: window {} exceeds the trained context {}: using {}", ms.name,
                            o.window, lm.model.config.max_seq_len, lm.model.config.max_seq_len));
        o.window = lm.model.config.max_seq_len;
      }
      const PerplexityResult r = perplexity(lm.model, *lm.tokenizer, stream, o);
      KV_CHECK(r.tokens_scored > 0,
               "{}: text '{}' gives {} tokens to model '{}' (BOS included), nothing to score "
               "(expected at least 2)",
               ts.path.string(), ts.name, stream.size(), ms.name);
      t.add_row({ms.name, ts.name, int64_t(r.window), int64_t(r.stride), r.tokens_scored, r.windows,
                 r.bytes_scored, r.mean_nll(), r.perplexity(), r.bits_per_byte()});
      ctx.unit_done(fmt::format("{} on {}: {} tokens, ppl {:.3f}, {:.1f} s", ms.name, ts.name,
                                r.tokens_scored, r.perplexity(), r.seconds));
      timings.push_back(
          {{"model", ms.name},
           {"text", ts.name},
           {"seconds", r.seconds},
           {"tokens_per_second", r.seconds > 0 ? double(r.tokens_scored) / r.seconds : 0.0}});
    }
  }
  ctx.manifest->extra["timings"] = timings;
  return {t};
}

}  // namespace

ExperimentKind perplexity_kind() {
  ExperimentKind k;
  k.name = "perplexity";
  k.summary = "sliding-window perplexity of every model on every text";
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    PerplexityConfig cfg;
    cfg.opt.window = s.get_at_least_or<int>("window", 0, 0);
    cfg.opt.stride = s.get_at_least_or<int>("stride", 0, 0);
    cfg.opt.max_tokens = s.get_at_least_or<int64_t>("max_tokens", 0, 0);
    KV_CHECK(cfg.opt.window == 0 || cfg.opt.window >= 2,
             "{}: perplexity.window must be 0 or at least 2, got {}", s.file(), cfg.opt.window);
    KV_CHECK(cfg.opt.stride == 0 || cfg.opt.window == 0 || cfg.opt.stride < cfg.opt.window,
             "{}: perplexity.stride {} must be below perplexity.window {}", s.file(),
             cfg.opt.stride, cfg.opt.window);
    return [cfg](ExperimentContext& ctx) { return run_perplexity(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
