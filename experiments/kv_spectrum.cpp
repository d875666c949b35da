// Experiment kind `kv_spectrum` (low-rank evidence, paper A Sec. 3.2 / Fig. 1): singular
// values of the KV cache per model, calibration text, layer and tensor (K before RoPE, K
// after RoPE, V), for the layer's whole cache [tokens, n_kv_heads * head_dim] (the
// paper's view), each head alone [tokens, head_dim], and groups of adjacent heads
// [tokens, group * head_dim] for target KV-head counts. One streaming Gram per layer and
// tensor gives all three (the smaller ones are its diagonal blocks).
//
//   kv_spectrum:
//     tokens: 16384           # calibration tokens per model x text (whole sequences)
//     seq_len: 0              # tokens per sequence incl. BOS; 0 = the context, at most 2048
//     tensors: [k_pre_rope, k, v]
//     scopes: [layer, head, group]
//     target_kv_heads: []     # group scopes; [] = half the KV heads (when that is > 1)
//     centre: false           # subtract the mean (PCA) instead of the paper's raw energy
//     exclude_bos: false      # leave out position 0 (the BOS / attention-sink token)
//     layers: []              # [] = every layer
//     dumps: []               # HDF5 dumps to analyse instead of running models on texts
#include <cmath>
#include <map>

#include "experiments.hpp"
#include "kvscope/kv/calibration.hpp"
#include "kvscope/kv/kv_dump.hpp"
#include "kvscope/kv/spectrum.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/perplexity.hpp"

namespace kvscope {

namespace {

struct SpectrumConfig {
  int64_t tokens = 16384;
  int seq_len = 0;
  std::vector<std::string> tensors = {"k_pre_rope", "k", "v"};
  std::vector<std::string> scopes = {"layer", "head", "group"};
  std::vector<int> target_kv_heads;
  bool centre = false;
  bool exclude_bos = false;
  std::vector<int> layers;
  std::vector<std::string> dumps;
};

struct Tables2 {
  Table spectrum{"spectrum",
                 {{"model", Column::String},
                  {"calibration", Column::String},
                  {"layer", Column::Int},
                  {"tensor", Column::String},
                  {"scope", Column::String},
                  {"groups", Column::Int},
                  {"index", Column::Int},
                  {"dim", Column::Int},
                  {"rank", Column::Int},
                  {"singular_value", Column::Float},
                  {"energy_share", Column::Float},
                  {"cumulative_energy", Column::Float}}};
  Table summary{"summary",
                {{"model", Column::String},
                 {"calibration", Column::String},
                 {"tokens", Column::Int},
                 {"sequences", Column::Int},
                 {"centred", Column::Int},
                 {"layer", Column::Int},
                 {"tensor", Column::String},
                 {"scope", Column::String},
                 {"groups", Column::Int},
                 {"index", Column::Int},
                 {"dim", Column::Int},
                 {"rank50", Column::Int},
                 {"rank75", Column::Int},
                 {"rank90", Column::Int},
                 {"rank95", Column::Int},
                 {"rank99", Column::Int},
                 {"top25_energy", Column::Float},
                 {"top50_energy", Column::Float},
                 {"stable_rank", Column::Float}}};
};

std::vector<int> selected_layers(const SpectrumConfig& cfg, int n_layers, const std::string& what) {
  if (cfg.layers.empty()) {
    std::vector<int> all;
    for (int l = 0; l < n_layers; ++l) all.push_back(l);
    return all;
  }
  for (int l : cfg.layers)
    KV_CHECK(l >= 0 && l < n_layers, "{}: kv_spectrum.layers has {}, but the model has {} layers",
             what, l, n_layers);
  return cfg.layers;
}

std::vector<int> group_targets(const SpectrumConfig& cfg, int n_kv, const std::string& what) {
  std::vector<int> t = cfg.target_kv_heads;
  if (t.empty() && n_kv / 2 > 1 && n_kv % 2 == 0) t.push_back(n_kv / 2);
  for (int g : t)
    KV_CHECK(g >= 1 && g <= n_kv && n_kv % g == 0,
             "{}: target_kv_heads {} must divide the {} KV heads", what, g, n_kv);
  return t;
}

bool has(const std::vector<std::string>& v, const char* s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// One spectrum a layer x tensor Gram gives: a scope's block of columns.
struct Scope {
  const char* scope;
  int groups, index, offset, size;
};

std::vector<Scope> scopes_of(const SpectrumConfig& cfg, int n_kv, int hd,
                             const std::vector<int>& targets) {
  std::vector<Scope> out;
  if (has(cfg.scopes, "layer")) out.push_back({"layer", 1, 0, 0, n_kv * hd});
  if (has(cfg.scopes, "head"))
    for (int h = 0; h < n_kv; ++h) out.push_back({"head", n_kv, h, h * hd, hd});
  if (has(cfg.scopes, "group"))
    for (int target : targets) {
      const int per = n_kv / target;
      for (int j = 0; j < target; ++j) out.push_back({"group", target, j, j * per * hd, per * hd});
    }
  return out;
}

// One layer x tensor Gram to analyse, and what its rows are labelled with.
struct GramJob {
  GramAccumulator* gram;
  int layer;
  std::string tensor;
};

// Every scope of every job's Gram into the tables, in job order. The eigendecompositions
// (what dominates for wide caches: 5 s for a 4096-wide Gram) are split across MPI ranks,
// job j on rank j mod N, a chunk of N jobs at a time so that memory holds N jobs' singular
// values; the rows are then written in order by every rank alike.
void emit(Tables2& out, const std::vector<GramJob>& jobs, const SpectrumConfig& cfg,
          const std::string& model, const std::string& calib, int64_t sequences, int n_kv, int hd,
          const std::vector<int>& targets) {
  const std::vector<Scope> scopes = scopes_of(cfg, n_kv, hd, targets);
  const size_t d = size_t(n_kv) * hd, per_job = scopes.size() * d;
  const size_t chunk = size_t(dist::size());
  for (size_t j0 = 0; j0 < jobs.size(); j0 += chunk) {
    const size_t n = std::min(chunk, jobs.size() - j0);
    std::vector<double> sv_all(n * per_job, 0.0);  // [job][scope][d], a scope's first `size`
    for (size_t k = 0; k < n; ++k) {
      if (!dist::mine(k)) continue;
      for (size_t b = 0; b < scopes.size(); ++b) {
        const Scope& sc = scopes[b];
        const std::vector<double> sv = singular_values_from_gram(
            jobs[j0 + k].gram->block(sc.offset, sc.size, cfg.centre), sc.size);
        std::copy(sv.begin(), sv.end(), sv_all.begin() + long(k * per_job + b * d));
      }
    }
    dist::gather_owned(sv_all, per_job);
    for (size_t k = 0; k < n; ++k) {
      const GramJob& job = jobs[j0 + k];
      for (size_t b = 0; b < scopes.size(); ++b) {
        const Scope& sc = scopes[b];
        const double* first = sv_all.data() + k * per_job + b * d;
        const std::vector<double> sv(first, first + sc.size);
        const std::vector<double> e = energy_shares(sv);
        double c = 0.0;
        for (int i = 0; i < sc.size; ++i) {
          c += e[size_t(i)];
          out.spectrum.add_row({model, calib, int64_t(job.layer), job.tensor, std::string(sc.scope),
                                int64_t(sc.groups), int64_t(sc.index), int64_t(sc.size),
                                int64_t(i + 1), sv[size_t(i)], e[size_t(i)], std::min(c, 1.0)});
        }
        const EnergySummary su = summarize_energy(sv);
        out.summary.add_row(
            {model, calib, job.gram->rows(), sequences, int64_t(cfg.centre), int64_t(job.layer),
             job.tensor, std::string(sc.scope), int64_t(sc.groups), int64_t(sc.index),
             int64_t(sc.size), int64_t(su.rank50), int64_t(su.rank75), int64_t(su.rank90),
             int64_t(su.rank95), int64_t(su.rank99), su.top25, su.top50, su.stable_rank});
      }
    }
  }
}

void run_live(const SpectrumConfig& cfg, ExperimentContext& ctx, Tables2& out) {
  ctx.begin_units(int(ctx.models.size() * ctx.texts.size()));
  for (const ModelSpec& ms : ctx.models) {
    const LoadedModel lm = ctx.load(ms);
    const ModelConfig& c = lm.model.config;
    const std::vector<int> targets = group_targets(cfg, c.n_kv_heads, ms.name);
    CalibrationOptions co;
    co.tokens = cfg.tokens;
    co.seq_len = cfg.seq_len;
    co.tensors = cfg.tensors;
    co.layers = selected_layers(cfg, c.n_layers, ms.name);
    co.exclude_bos = cfg.exclude_bos;
    co.keys = "kv_spectrum.seq_len and kv_spectrum.tokens";
    for (const TextSpec& ts : ctx.texts) {
      const std::vector<int32_t> stream = token_stream(*lm.tokenizer, ctx.documents(ts));
      co.source = ts.path.string();
      CalibrationGrams g = collect_grams(lm.model, lm.tokenizer->sequence_bos(), stream, co);
      std::vector<GramJob> jobs;
      for (auto& [l, gs] : g.layers)
        for (size_t i = 0; i < cfg.tensors.size(); ++i) jobs.push_back({&gs[i], l, cfg.tensors[i]});
      emit(out, jobs, cfg, ms.name, ts.name, g.sequences, c.n_kv_heads, c.head_dim, targets);
      ctx.unit_done(fmt::format("{} on {}: {} sequences x {} tokens", ms.name, ts.name, g.sequences,
                                g.seq_len));
    }
  }
}

void run_dumps(const SpectrumConfig& cfg, ExperimentContext& ctx, Tables2& out) {
  ctx.begin_units(int(cfg.dumps.size()));
  for (const std::string& path : cfg.dumps) {
    const KVDumpReader r(path);
    const DumpInfo& in = r.info();
    const ModelConfig& c = in.config;
    ctx.manifest->inputs.push_back(file_record("dump", path));
    const std::string calib = "dump:" + std::filesystem::path(path).stem().string();
    const std::vector<int> targets = group_targets(cfg, c.n_kv_heads, path);
    const int block = std::max(1, 4096 / in.seq_len);  // ~4k tokens of one layer at a time
    std::vector<float> buf;
    for (int l : selected_layers(cfg, c.n_layers, path)) {
      for (const std::string& t : cfg.tensors) {
        KV_CHECK(r.has(t), "{}: the dump has no tensor '{}' (it has: {})", path, t,
                 fmt::join(in.tensors, ", "));
        GramAccumulator g(c.kv_dim());
        for (int s0 = 0; s0 < in.n_seq; s0 += block) {
          if (!dist::mine(size_t(s0 / block))) continue;  // MPI: blocks spread over ranks
          const int n = std::min(block, in.n_seq - s0);
          const size_t per_head = size_t(n) * in.seq_len * c.head_dim;
          buf.resize(per_head * c.n_kv_heads);  // [heads][n][T][hd]
          for (int h = 0; h < c.n_kv_heads; ++h)
            r.read_head(l, t, h, s0, n, buf.data() + h * per_head);
          for (int s = 0; s < n; ++s)
            g.add_heads(buf.data() + size_t(s) * in.seq_len * c.head_dim, c.n_kv_heads, in.seq_len,
                        c.head_dim, cfg.exclude_bos ? 1 : 0, int64_t(per_head));
        }
        g.reduce_across_ranks();
        emit(out, {{&g, l, t}}, cfg, in.model_name, calib, in.n_seq, c.n_kv_heads, c.head_dim,
             targets);
      }
    }
    ctx.unit_done(fmt::format("{}: {} sequences x {} tokens", path, in.n_seq, in.seq_len));
  }
}

Tables run_spectrum(const SpectrumConfig& cfg, ExperimentContext& ctx) {
  KV_CHECK(!cfg.dumps.empty() || (!ctx.models.empty() && !ctx.texts.empty()),
           "{}: kv_spectrum needs models and texts, or kv_spectrum.dumps",
           ctx.config_file.string());
  Tables2 out;
  if (cfg.dumps.empty())
    run_live(cfg, ctx, out);
  else
    run_dumps(cfg, ctx, out);
  ctx.after_tables.push_back(
      [](const std::filesystem::path& dir) { plot_spectrum(dir / "spectrum.csv", dir); });
  return {out.spectrum, out.summary};
}

}  // namespace

ExperimentKind kv_spectrum_kind() {
  ExperimentKind k;
  k.name = "kv_spectrum";
  k.summary = "singular-value energy of K (before/after RoPE) and V per layer, head and group";
  k.needs_models = false;
  k.needs_texts = false;
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    SpectrumConfig cfg;
    cfg.tokens = s.get_at_least_or<int64_t>("tokens", 1, cfg.tokens);
    cfg.seq_len = s.get_at_least_or<int>("seq_len", 0, 0);
    if (s.has("tensors")) cfg.tensors = s.list<std::string>("tensors");
    for (const std::string& t : cfg.tensors)
      KV_CHECK(t == "k_pre_rope" || t == "k" || t == "v",
               "{}: kv_spectrum.tensors: '{}' is not one of k_pre_rope, k, v", s.file(), t);
    if (s.has("scopes")) cfg.scopes = s.list<std::string>("scopes");
    for (const std::string& t : cfg.scopes)
      KV_CHECK(t == "layer" || t == "head" || t == "group",
               "{}: kv_spectrum.scopes: '{}' is not one of layer, head, group", s.file(), t);
    if (s.has("target_kv_heads")) cfg.target_kv_heads = s.list<int>("target_kv_heads");
    cfg.centre = s.get_or<bool>("centre", false);
    cfg.exclude_bos = s.get_or<bool>("exclude_bos", false);
    if (s.has("layers")) cfg.layers = s.list<int>("layers");
    if (s.has("dumps")) cfg.dumps = s.list<std::string>("dumps");
    for (const std::string& d : cfg.dumps)
      KV_CHECK(std::filesystem::exists(d), "{}: kv_spectrum.dumps: '{}' does not exist", s.file(),
               d);
    return [cfg](ExperimentContext& ctx) { return run_spectrum(cfg, ctx); };
  };
  return k;
}

}  // namespace kvscope
