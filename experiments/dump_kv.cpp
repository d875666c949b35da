// Experiment kind `dump_kv`: for every model x text, dump K/V (and optionally Q, the
// attention output and logits) to results/NAME/MODEL__TEXT.h5 (docs/hdf5-schema.md).
//
//   dump_kv:
//     seq_len: 0           # tokens per sequence incl. BOS; 0 = the model's context, at most 2048
//     n_seq: 8             # sequences per model x text
//     tensors: [k_pre_rope, k, v]   # any of k_pre_rope, k, v, q, attn_out
//     logits: false        # also the final-layer logits
//     dtype: f32           # f32 or f16
//     gzip: 0              # 0 = none, 1..9 = deflate level (with shuffle)
//     chunk_seqs: 0        # chunk shape [chunk_seqs, chunk_heads, seq_len, head_dim];
//     chunk_heads: 0       #   both 0: contiguous if uncompressed, else one head of one sequence
#include <algorithm>
#include <nlohmann/json.hpp>

#include "experiments.hpp"
#include "kvscope/kv/kv_dump.hpp"
#include "kvscope/runtime/perplexity.hpp"

namespace kvscope {

DumpOptions parse_dump_options(YamlMap& s) {
  DumpOptions o;
  o.seq_len = s.get_at_least_or<int>("seq_len", 0, 0);
  o.keys = s.key_path("seq_len") + " and " + s.key_path("n_seq");
  o.n_seq = s.get_at_least_or<int>("n_seq", 1, 8);
  if (s.has("tensors")) o.tensors = s.list<std::string>("tensors");
  o.logits = s.get_or<bool>("logits", false);
  o.dtype = s.get_choice_or("dtype", {"f32", "f16"}, "f32") == "f16" ? DType::F16 : DType::F32;
  o.gzip = s.get_at_least_or<int>("gzip", 0, 0);
  o.chunk_seqs = s.get_at_least_or<int>("chunk_seqs", 0, 0);
  o.chunk_heads = s.get_at_least_or<int>("chunk_heads", 0, 0);
  // Checked here, before any model loads, naming the config line.
  const auto& names = dump_tensor_names();
  for (size_t i = 0; i < o.tensors.size(); ++i) {
    std::string known;
    for (const std::string& n : names) known += (known.empty() ? "" : ", ") + n;
    KV_CHECK(std::find(names.begin(), names.end(), o.tensors[i]) != names.end(),
             "{}: {}[{}] '{}' is not a tensor kvscope dumps (known: {})",
             yaml_detail::location(s.file(), s.key_line("tensors")), s.key_path("tensors"), i,
             o.tensors[i], known);
    KV_CHECK(std::find(o.tensors.begin(), o.tensors.begin() + long(i), o.tensors[i]) ==
                 o.tensors.begin() + long(i),
             "{}: {} lists '{}' twice", yaml_detail::location(s.file(), s.key_line("tensors")),
             s.key_path("tensors"), o.tensors[i]);
  }
  KV_CHECK(o.gzip <= 9, "{}: key '{}' must be a deflate level 0..9, got {}",
           yaml_detail::location(s.file(), s.key_line("gzip")), s.key_path("gzip"), o.gzip);
  KV_CHECK(!o.tensors.empty() || o.logits,
           "{}: {}: nothing to dump (tensors is empty and logits "
           "false)",
           yaml_detail::location(s.file(), s.line()), s.prefix());
  KV_CHECK(o.seq_len != 1, "{}: key '{}' must be 0 (the model's context) or at least 2, got 1",
           yaml_detail::location(s.file(), s.key_line("seq_len")), s.key_path("seq_len"));
  return o;
}

namespace {

Tables run_dump(const DumpOptions& opt, ExperimentContext& ctx) {
  Table t("dumps", {{"model", Column::String},
                    {"text", Column::String},
                    {"file", Column::String},
                    {"n_seq", Column::Int},
                    {"seq_len", Column::Int},
                    {"tensors", Column::String},
                    {"dtype", Column::String},
                    {"gzip", Column::Int},
                    {"tensor_bytes", Column::Int}});
  nlohmann::json timings = nlohmann::json::array();
  std::string tensors;
  for (const std::string& n : opt.tensors) tensors += (tensors.empty() ? "" : " ") + n;
  if (opt.logits) tensors += tensors.empty() ? "logits" : " logits";
  ctx.begin_units(int(ctx.models.size() * ctx.texts.size()));
  for (const ModelSpec& ms : ctx.models) {
    const LoadedModel lm = ctx.load(ms);
    for (const TextSpec& ts : ctx.texts) {
      const std::vector<int32_t> stream = token_stream(*lm.tokenizer, ctx.documents(ts));
      const std::string file = ms.name + "__" + ts.name + ".h5";
      DumpSource src{ms.name,
                     lm.model.files,
                     lm.tokenizer_path,
                     lm.tokenizer->kind(),
                     ts.path,
                     format_name(ts.format),
                     {},
                     {}};
      StatusLine status(ctx.verbose);
      DumpOptions o = opt;
      if (status.enabled())
        o.on_sequence = [&](int done, int total, int64_t bytes) {
          status.update(fmt::format("[{}] {} on {}: {}/{} sequences, {:.1f} MB", ctx.name, ms.name,
                                    ts.name, done, total, bytes / 1e6),
                        done == total);
        };
      const DumpStats st = dump_kv(lm.model, *lm.tokenizer, stream, o, src, ctx.out_dir / file);
      status.finish();
      t.add_row({ms.name, ts.name, file, int64_t(st.n_seq), int64_t(st.seq_len), tensors,
                 std::string(opt.dtype == DType::F16 ? "f16" : "f32"), int64_t(opt.gzip),
                 st.tensor_bytes});
      ctx.unit_done(
          fmt::format("{} on {}: {} x {} tokens, {:.1f} MB in {:.2f} s ({:.0f}% forward pass)",
                      ms.name, ts.name, st.n_seq, st.seq_len, st.tensor_bytes / 1e6, st.seconds,
                      100.0 * st.forward_seconds / st.seconds));
      timings.push_back({{"file", file},
                         {"seconds", st.seconds},
                         {"forward_seconds", st.forward_seconds},
                         {"write_seconds", st.write_seconds},
                         {"file_bytes", st.file_bytes}});
    }
  }
  ctx.manifest->extra["timings"] = timings;
  return {t};
}

}  // namespace

ExperimentKind dump_kv_kind() {
  ExperimentKind k;
  k.name = "dump_kv";
  k.summary = "dump K (before/after RoPE), V and more of every layer and head to HDF5";
  k.prepare = [](YamlMap& s) -> ExperimentRun {
    const DumpOptions o = parse_dump_options(s);
    return [o](ExperimentContext& ctx) { return run_dump(o, ctx); };
  };
  return k;
}

}  // namespace kvscope
