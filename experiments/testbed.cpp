#include "testbed.hpp"

#include <cmath>

#include "kvscope/runtime/perplexity.hpp"
#include "task_config.hpp"

namespace kvscope {

TestbedConfig parse_testbed(YamlMap& s) {
  TestbedConfig c;
  c.on = true;
  YamlMap t = s.map("text");
  c.text = parse_text_spec(t);
  c.induction_x = s.get_or<double>("induction_x", c.induction_x);
  KV_CHECK(c.induction_x > 1, "{}: testbed.induction_x must be > 1, got {}", s.file(),
           c.induction_x);
  YamlMap p = s.map_or_empty("passage");
  c.passage.context = p.get_at_least_or<int>("context", 0, 0);
  c.passage.length = p.get_at_least_or<int>("length", 2, c.passage.length);
  c.passage.depth = p.get_or<double>("depth", c.passage.depth);
  KV_CHECK(c.passage.depth >= 0 && c.passage.depth <= 1,
           "{}: testbed.passage.depth must lie in [0, 1], got {}", s.file(), c.passage.depth);
  c.passage.trials = p.get_at_least_or<int>("trials", 1, c.passage.trials);
  c.perplexity_tokens = s.get_at_least_or<int64_t>("perplexity_tokens", 0, 0);
  if (s.has("twin")) {
    YamlMap tw = s.map("twin");
    c.twin = tw.get<std::string>("model");
    c.of = tw.list<std::string>("of");
  }
  return c;
}

void Testbed::measure(ExperimentContext& ctx, const ModelSpec& ms, const LoadedModel& lm,
                      const HeadScores& s, double uniform, const std::vector<double>& copy_nll) {
  const Model& m = lm.model;
  const ModelConfig& c = m.config;
  Row r;
  r.model = ms.name;
  r.kv_heads = c.n_layers * c.n_kv_heads;
  for (int l = 0; l < c.n_layers; ++l) {
    bool any = false;
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const size_t i = size_t(l) * c.n_kv_heads + g;
      const bool ind = s.kv_induction[i] >= cfg_.induction_x * uniform;
      const bool echo = s.kv_echo[i] >= cfg_.induction_x * uniform;
      r.induction_heads += ind, r.echo_heads += echo, r.retrieval_heads += ind || echo;
      any |= ind;
      r.best_induction_x = std::max(r.best_induction_x, s.kv_induction[i] / uniform);
      r.best_echo_x = std::max(r.best_echo_x, s.kv_echo[i] / uniform);
    }
    if (any) {
      if (r.n_induction_layers) r.induction_layers += ' ';
      r.induction_layers += std::to_string(l);
      ++r.n_induction_layers;
    }
  }
  r.copy_first = copy_nll.at(0);
  for (size_t k = 1; k < copy_nll.size(); ++k) r.copy_later += copy_nll[k];
  r.copy_later /= double(copy_nll.size() - 1);
  std::vector<int32_t> stream = token_stream(*lm.tokenizer, ctx.documents(cfg_.text));
  r.passage = passage_copy(m, without_bos(stream, c.bos_id), cfg_.passage);
  PerplexityOptions po;
  po.max_tokens = cfg_.perplexity_tokens;
  r.perplexity = perplexity(m, *lm.tokenizer, stream, po).perplexity();
  ctx.log(fmt::format(
      "{}: {} induction head(s) >= {:g}x uniform in layer(s) [{}], passage copy NLL {:.3f} -> "
      "{:.3f} ({:.0f}% lower), perplexity {:.3f}",
      ms.name, r.induction_heads, cfg_.induction_x, r.induction_layers, r.passage.mean_first(),
      r.passage.mean_second(), 100 * r.passage.drop(), r.perplexity));
  rows_.push_back(std::move(r));
}

Table Testbed::table() const {
  Table t("testbed", {{"model", Column::String},
                      {"kv_heads", Column::Int},
                      {"induction_x", Column::Float},
                      {"induction_heads", Column::Int},
                      {"echo_heads", Column::Int},
                      {"retrieval_heads", Column::Int},
                      {"retrieval_share", Column::Float},
                      {"induction_layers", Column::String},
                      {"n_induction_layers", Column::Int},
                      {"best_induction_x", Column::Float},
                      {"best_echo_x", Column::Float},
                      {"copy_first_nll", Column::Float},
                      {"copy_later_nll", Column::Float},
                      {"copy_drop", Column::Float},
                      {"passage_context", Column::Int},
                      {"passage_length", Column::Int},
                      {"passage_gap", Column::Int},
                      {"passage_windows", Column::Int},
                      {"passage_first_nll", Column::Float},
                      {"passage_second_nll", Column::Float},
                      {"passage_drop", Column::Float},
                      {"passage_drop_se", Column::Float},
                      {"perplexity", Column::Float},
                      {"twin", Column::String},
                      {"twin_perplexity", Column::Float},
                      {"perplexity_ratio", Column::Float}});
  for (const Row& r : rows_) {
    std::string twin;
    double twin_ppl = NAN;
    if (!cfg_.twin.empty() && std::find(cfg_.of.begin(), cfg_.of.end(), r.model) != cfg_.of.end())
      for (const Row& o : rows_)
        if (o.model == cfg_.twin) twin = o.model, twin_ppl = o.perplexity;
    t.add_row({r.model,
               int64_t(r.kv_heads),
               cfg_.induction_x,
               int64_t(r.induction_heads),
               int64_t(r.echo_heads),
               int64_t(r.retrieval_heads),
               double(r.retrieval_heads) / r.kv_heads,
               r.induction_layers,
               int64_t(r.n_induction_layers),
               r.best_induction_x,
               r.best_echo_x,
               r.copy_first,
               r.copy_later,
               1 - r.copy_later / r.copy_first,
               int64_t(r.passage.context),
               int64_t(r.passage.length),
               int64_t(r.passage.gap),
               int64_t(r.passage.first.size()),
               r.passage.mean_first(),
               r.passage.mean_second(),
               r.passage.drop(),
               r.passage.drop_se(),
               r.perplexity,
               twin,
               twin_ppl,
               r.perplexity / twin_ppl});
  }
  return t;
}

}  // namespace kvscope
