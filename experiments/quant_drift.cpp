// Experiment kind `quant_drift`: how far each model's KV cache and next-token predictions
// move from a reference model's on the same tokens -- a GGUF quantization (Q8_0, Q4_K_M,
// ...) against the full-precision Hugging Face checkpoint it came from, or any two models
// of one shape and tokenizer.
//
//   quant_drift:
//     reference: NAME   # the model the others are compared with; default: the first
//     seq_len: 512      # tokens per sequence (BOS at document starts as in the stream)
//     n_seq: 4          # sequences per text: stream[i seq_len, (i + 1) seq_len)
//
// Tables (every model but the reference, every text):
//   quant_drift_kv.csv: per layer, KV head and tensor (k_pre_rope, k, v): relative L2
//     ||X - X_ref|| / ||X_ref|| over all tokens of all sequences, mean cosine of the token
//     vectors and the largest absolute difference.
//   quant_drift_layers.csv: the same per layer over all KV heads.
//   quant_drift_nll.csv: perplexity of both on the scored tokens (positions 1.. of each
//     sequence, BOS targets skipped), their ratio, mean KL(reference || model) of the
//     next-token distributions (nats) and how often both predict the same top token.
// The reference's captures of one sequence ([layers, kv_heads, seq_len, head_dim] x 3
// floats) and logits ([seq_len, vocab], in its run state) are all that is held, so memory
// is bounded by seq_len, not by n_seq. Models must encode every text to the same ids and share the
// shape of their KV cache; otherwise the run is refused naming both.
#include <algorithm>
#include <cmath>

#include "experiments.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/perplexity.hpp"

namespace kvscope {

namespace {

struct DriftConfig {
  std::string reference;  // "" = the first model
  int seq_len = 512;
  int n_seq = 4;
};

const char* const kTensors[3] = {"k_pre_rope", "k", "v"};

// The reference's K/V of one sequence: [layer][tensor] -> [kv_heads, T, head_dim].
struct Keep : ForwardObserver {
  std::vector<std::array<std::vector<float>, 3>> kv;
  void on_layer(const LayerCapture& lc) override {
    const size_t n = size_t(lc.n_kv_heads) * lc.n_tokens * lc.head_dim;
    kv.push_back({std::vector<float>(lc.k_pre_rope, lc.k_pre_rope + n),
                  std::vector<float>(lc.k, lc.k + n), std::vector<float>(lc.v, lc.v + n)});
  }
};

// Sums over tokens (and sequences) for one layer x KV head x tensor.
struct Acc {
  double diff2 = 0, ref2 = 0, cos_sum = 0, max_abs = 0;
  int64_t vectors = 0;
  void add(const Acc& o) {
    diff2 += o.diff2, ref2 += o.ref2, cos_sum += o.cos_sum, vectors += o.vectors;
    max_abs = std::max(max_abs, o.max_abs);
  }
  double rel_l2() const { return ref2 > 0 ? std::sqrt(diff2 / ref2) : 0.0; }
  double mean_cos() const { return vectors ? cos_sum / double(vectors) : 0.0; }
};

// Compares each layer with the reference's as it is computed: acc[layer][head][tensor].
struct Compare : ForwardObserver {
  const Keep* ref = nullptr;
  std::vector<std::vector<std::array<Acc, 3>>>* acc = nullptr;
  void on_layer(const LayerCapture& lc) override {
    const float* got[3] = {lc.k_pre_rope, lc.k, lc.v};
    for (int t = 0; t < 3; ++t) {
      const float* want = ref->kv[size_t(lc.layer)][size_t(t)].data();
      for (int g = 0; g < lc.n_kv_heads; ++g) {
        Acc& a = (*acc)[size_t(lc.layer)][size_t(g)][size_t(t)];
        for (int i = 0; i < lc.n_tokens; ++i) {
          const size_t off = (size_t(g) * lc.n_tokens + size_t(i)) * lc.head_dim;
          double d2 = 0, r2 = 0, x2 = 0, dot = 0;
          for (int j = 0; j < lc.head_dim; ++j) {
            const double x = got[t][off + j], r = want[off + j];
            d2 += (x - r) * (x - r), r2 += r * r, x2 += x * x, dot += x * r;
            a.max_abs = std::max(a.max_abs, std::abs(x - r));
          }
          a.diff2 += d2, a.ref2 += r2, ++a.vectors;
          a.cos_sum += r2 > 0 && x2 > 0 ? dot / std::sqrt(r2 * x2) : (r2 == x2 ? 1.0 : 0.0);
        }
      }
    }
  }
};

void check_same_shape(const Model& a, const Model& b, const std::string& an,
                      const std::string& bn) {
  const ModelConfig &x = a.config, &y = b.config;
  auto same = [&](int u, int v, const char* what) {
    KV_CHECK(u == v,
             "quant_drift: model '{}' has {} {} but the reference '{}' has {}: their "
             "caches cannot be compared",
             bn, v, what, an, u);
  };
  same(x.n_layers, y.n_layers, "layers");
  same(x.n_kv_heads, y.n_kv_heads, "KV heads");
  same(x.head_dim, y.head_dim, "head_dim");
  same(x.vocab_size, y.vocab_size, "vocabulary rows");
  KV_CHECK(!x.compressed_keys() && !y.compressed_keys(),
           "quant_drift: '{}' or '{}' caches "
           "compressed keys (a reduced model), which have no keys before RoPE to compare",
           an, bn);
}

std::string dtype_summary(const Model& m) {
  std::string s;
  for (const auto& [name, n] : m.stored_dtypes) {
    if (!s.empty()) s += ' ';
    s += fmt::format("{}:{}", name, n);
  }
  return s;
}

// The reference's index among the config's models (the first unless named).
size_t reference_index(const DriftConfig& cfg, const ExperimentContext& ctx) {
  KV_CHECK(ctx.models.size() >= 2,
           "{}: quant_drift compares models with a reference: list at "
           "least two models, got {}",
           ctx.config_file.string(), ctx.models.size());
  if (cfg.reference.empty()) return 0;
  size_t ri = ctx.models.size();
  std::string names;
  for (size_t i = 0; i < ctx.models.size(); ++i) {
    if (ctx.models[i].name == cfg.reference) ri = i;
    names += (i ? ", " : "") + ctx.models[i].name;
  }
  KV_CHECK(ri < ctx.models.size(),
           "{}: quant_drift.reference '{}' is not one of the models "
           "({})",
           ctx.config_file.string(), cfg.reference, names);
  return ri;
}

struct DriftTables {
  Table kv{"quant_drift_kv",
           {{"model", Column::String},
            {"reference", Column::String},
            {"text", Column::String},
            {"layer", Column::Int},
            {"kv_head", Column::Int},
            {"tensor", Column::String},
            {"rel_l2", Column::Float},
            {"mean_cosine", Column::Float},
            {"max_abs_diff", Column::Float}}};
  Table layers{"quant_drift_layers",
               {{"model", Column::String},
                {"reference", Column::String},
                {"text", Column::String},
                {"layer", Column::Int},
                {"tensor", Column::String},
                {"rel_l2", Column::Float},
                {"mean_cosine", Column::Float}}};
  Table nll{"quant_drift_nll",
            {{"model", Column::String},
             {"reference", Column::String},
             {"text", Column::String},
             {"weights", Column::String},
             {"sequences", Column::Int},
             {"tokens_scored", Column::Int},
             {"perplexity", Column::Float},
             {"reference_perplexity", Column::Float},
             {"perplexity_ratio", Column::Float},
             {"mean_kl", Column::Float},
             {"top1_agreement", Column::Float}}};
};

// One text: the drift of every compared model from the reference, summed over sequences.
struct TextDrift {
  const ExperimentContext& ctx;
  const std::vector<LoadedModel>& lms;
  const std::vector<size_t>& compared;  // indices into lms of every model but the reference
  const LoadedModel& ref;
  const std::string& rname;
  const int T;
  const ModelConfig& rc = ref.model.config;
  const size_t V = size_t(rc.vocab_size);
  // acc[k][layer][head][tensor] and the NLL-table sums of compared model k.
  std::vector<std::vector<std::vector<std::array<Acc, 3>>>> acc =
      std::vector<std::vector<std::vector<std::array<Acc, 3>>>>(
          compared.size(),
          std::vector<std::vector<std::array<Acc, 3>>>(
              size_t(rc.n_layers), std::vector<std::array<Acc, 3>>(size_t(rc.n_kv_heads))));
  std::vector<double> nll_m = std::vector<double>(compared.size()), kl = nll_m, top1 = nll_m;
  double nll_r = 0;
  int64_t scored = 0;

  // Every model must encode the text to the reference's ids.
  void check_same_tokens(const std::vector<std::string>& docs, const std::vector<int32_t>& stream,
                         const std::string& text) const {
    for (size_t i : compared) {
      const std::vector<int32_t> other = token_stream(*lms[i].tokenizer, docs);
      size_t at = 0;
      while (at < std::min(stream.size(), other.size()) && stream[at] == other[at]) ++at;
      KV_CHECK(at == stream.size() && at == other.size(),
               "quant_drift: model '{}' and the reference '{}' tokenize text '{}' differently "
               "(first difference at token {}: {} vs {}); compare models that share a "
               "tokenizer",
               ctx.models[i].name, rname, text, at,
               at < other.size() ? std::to_string(other[at]) : "end",
               at < stream.size() ? std::to_string(stream[at]) : "end");
    }
  }

  // One sequence: the reference's captures and logits, then each model compared with them.
  void add_sequence(std::span<const int32_t> toks) {
    Keep keep;
    RunState rs(rc, T);  // holds the reference's logits [T, V] for this sequence
    ForwardOptions o;
    o.observer = &keep;
    const std::span<const float> rl = forward(ref.model, rs, toks, o);
    // Scored positions t (target toks[t + 1] not BOS) and the reference's log-sum-exp there.
    std::vector<int> pos;
    std::vector<double> ref_lse;
    for (int t = 0; t + 1 < T; ++t) {
      if (toks[size_t(t) + 1] == ref.tokenizer->bos_id) continue;
      pos.push_back(t);
      ref_lse.push_back(log_sum_exp(rl.subspan(size_t(t) * V, V)));
      nll_r += ref_lse.back() - double(rl[size_t(t) * V + size_t(toks[size_t(t) + 1])]);
    }
    scored += int64_t(pos.size());
    for (size_t k = 0; k < compared.size(); ++k) {
      Compare cmp;
      cmp.ref = &keep;
      cmp.acc = &acc[k];
      RunState ms(lms[compared[k]].model.config, T);
      ForwardOptions mo;
      mo.observer = &cmp;
      const std::span<const float> ml = forward(lms[compared[k]].model, ms, toks, mo);
      for (size_t p = 0; p < pos.size(); ++p) {
        const std::span<const float> zr = rl.subspan(size_t(pos[p]) * V, V),
                                     zm = ml.subspan(size_t(pos[p]) * V, V);
        const double lse = log_sum_exp(zm);
        nll_m[k] += lse - double(zm[size_t(toks[size_t(pos[p]) + 1])]);
        double d = 0;  // sum_v p_ref(v) (log p_ref(v) - log p_model(v))
        for (size_t v = 0; v < V; ++v) {
          const double lr = double(zr[v]) - ref_lse[p];
          d += std::exp(lr) * (lr - (double(zm[v]) - lse));
        }
        kl[k] += d;
        top1[k] += std::max_element(zm.begin(), zm.end()) - zm.begin() ==
                   std::max_element(zr.begin(), zr.end()) - zr.begin();
      }
    }
  }

  void add_rows(DriftTables& t, const std::string& text, int n_seq) const {
    for (size_t k = 0; k < compared.size(); ++k) {
      const size_t i = compared[k];
      const std::string& mn = ctx.models[i].name;
      for (int l = 0; l < rc.n_layers; ++l)
        for (int ti = 0; ti < 3; ++ti) {
          Acc all;
          for (int g = 0; g < rc.n_kv_heads; ++g) {
            const Acc& a = acc[k][size_t(l)][size_t(g)][size_t(ti)];
            all.add(a);
            t.kv.add_row({mn, rname, text, int64_t(l), int64_t(g), std::string(kTensors[ti]),
                          a.rel_l2(), a.mean_cos(), a.max_abs});
          }
          t.layers.add_row({mn, rname, text, int64_t(l), std::string(kTensors[ti]), all.rel_l2(),
                            all.mean_cos()});
        }
      const double n = double(std::max<int64_t>(scored, 1));
      t.nll.add_row({mn, rname, text, dtype_summary(lms[i].model), int64_t(n_seq), scored,
                     std::exp(nll_m[k] / n), std::exp(nll_r / n), std::exp((nll_m[k] - nll_r) / n),
                     kl[k] / n, top1[k] / n});
    }
  }
};

Tables run_drift(const DriftConfig& cfg, ExperimentContext& ctx) {
  const size_t ri = reference_index(cfg, ctx);
  std::vector<LoadedModel> lms;
  for (const ModelSpec& ms : ctx.models) lms.push_back(ctx.load(ms));
  const LoadedModel& ref = lms[ri];
  const std::string& rname = ctx.models[ri].name;
  std::vector<size_t> compared;  // every model but the reference, in config order
  for (size_t i = 0; i < lms.size(); ++i)
    if (i != ri) compared.push_back(i);
  for (size_t i : compared) check_same_shape(ref.model, lms[i].model, rname, ctx.models[i].name);
  int T = cfg.seq_len;
  for (const LoadedModel& lm : lms) T = std::min(T, lm.model.config.max_seq_len);
  if (T < cfg.seq_len)
    ctx.log(fmt::format("seq_len {} exceeds a model's trained context: using {}", cfg.seq_len, T));
  DriftTables tables;
  ctx.begin_units(int(ctx.texts.size()));
  for (const TextSpec& ts : ctx.texts) {
    const std::vector<std::string> docs = ctx.documents(ts);
    const std::vector<int32_t> stream = token_stream(*ref.tokenizer, docs);
    TextDrift drift{ctx, lms, compared, ref, rname, T};
    drift.check_same_tokens(docs, stream, ts.name);
    const int n_seq = int(std::min<size_t>(size_t(cfg.n_seq), stream.size() / size_t(T)));
    KV_CHECK(n_seq > 0, "{}: text '{}' gives {} tokens, fewer than one sequence of {}",
             ts.path.string(), ts.name, stream.size(), T);
    for (int s = 0; s < n_seq; ++s) {
      ctx.step(fmt::format("{}: {} models x sequence", ts.name, compared.size() + 1), s, n_seq);
      drift.add_sequence({stream.data() + size_t(s) * size_t(T), size_t(T)});
    }
    drift.add_rows(tables, ts.name, n_seq);
    ctx.unit_done(fmt::format("{}: {} sequences of {} tokens", ts.name, n_seq, T));
  }
  return {tables.kv, tables.layers, tables.nll};
}

}  // namespace

ExperimentKind quant_drift_kind() {
  ExperimentKind k;
  k.name = "quant_drift";
  k.splits = false;  // one process: its loop is not split across MPI ranks
  k.summary = "K/V and next-token drift of each model from a reference (GGUF vs its original)";
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    DriftConfig cfg;
    cfg.reference = s.get_or<std::string>("reference", "");
    cfg.seq_len = s.get_at_least_or<int>("seq_len", 2, 512);
    cfg.n_seq = s.get_at_least_or<int>("n_seq", 1, 4);
    return [cfg](ExperimentContext& ctx) { return run_drift(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
