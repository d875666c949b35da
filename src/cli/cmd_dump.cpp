#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "commands.hpp"
#include "kvscope/io/progress.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/kv/kv_dump.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "kvscope/runtime/threads.hpp"

namespace kvscope::cli {

namespace {

// The token stream of as much of the text as the sequences need: sequences are cut from
// its start, so a prefix gives the same dump as the whole file. Without --max-docs or
// --max-bytes, reads 64 bytes per needed token (no tokenizer packs more into one token),
// then 4x more while too few tokens came and the file had more to give; so an endless
// stream (/dev/zero) or a huge file costs what the dump needs, not its size.
std::vector<int32_t> read_dump_stream(const Tokenizer& tok, TextSpec ts, int64_t tokens_needed) {
  const bool user_limit = ts.max_docs != 0 || ts.max_bytes != 0;
  if (!user_limit) ts.max_bytes = size_t(std::max<int64_t>(tokens_needed, 1024)) * 64;
  for (;;) {
    std::vector<int32_t> stream = token_stream(tok, load_documents(ts));
    std::error_code ec;
    const bool whole = std::filesystem::is_regular_file(ts.path, ec) &&
                       std::filesystem::file_size(ts.path, ec) <= ts.max_bytes;
    if (user_limit || int64_t(stream.size()) >= tokens_needed || whole ||
        ts.max_bytes >= ts.read_limit)
      return stream;
    ts.max_bytes = std::min(ts.read_limit, ts.max_bytes * 4);
  }
}

}  // namespace

Action add_dump(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, text, format, field = "text", separator, out, dtype = "f32";
    std::vector<std::string> tensors = {"k_pre_rope", "k", "v"};
    size_t max_docs = 0, max_bytes = 0;
    int threads = 0;
    bool quiet = false;
    int bos = -1;  // --bos / --no-bos
    DumpOptions opt;
  };
  auto a = std::make_shared<Args>();
  a->opt.keys = "--seq-len and --n-seq";
  a->opt.n_seq = 8;
  app.add_option("--model,-m", a->model,
                 "llama2.c checkpoint, Hugging Face model directory or GGUF file")
      ->required();
  app.add_option("--tokenizer", a->tokenizer, "tokenizer file (default: found beside the model)");
  app.add_option("--text", a->text, "text to run: plain text or JSON lines")->required();
  app.add_option("--format", a->format, "plain or jsonl (default: by extension)")
      ->check(CLI::IsMember({"plain", "jsonl"}));
  app.add_option("--field", a->field, "jsonl: the field holding the text");
  app.add_option("--doc-separator", a->separator,
                 "plain: a line equal to this separates documents");
  app.add_option("--max-docs", a->max_docs, "read at most this many documents (0: all)");
  app.add_option("--seq-len", a->opt.seq_len,
                 "tokens per sequence incl. BOS (0: the model's context, at most 2048)")
      ->check(at_least(0));
  app.add_option("--n-seq", a->opt.n_seq, "number of sequences")->check(at_least(1));
  app.add_option("--out,-o", a->out, "output FILE.h5")->required();
  app.add_option("--tensors", a->tensors, "comma list of k_pre_rope,k,v,q,attn_out")
      ->delimiter(',');
  app.add_flag("--logits", a->opt.logits, "also store the final-layer logits");
  app.add_option("--dtype", a->dtype, "stored dtype")->check(CLI::IsMember({"f32", "f16"}));
  app.add_option("--gzip", a->opt.gzip, "deflate level 1..9 with shuffle (0: none)")
      ->check(CLI::Range(0, 9));
  app.add_option("--chunk-seqs", a->opt.chunk_seqs,
                 "sequences per chunk; with --chunk-heads 0 (default): contiguous datasets when "
                 "uncompressed, one head of one sequence per chunk when compressed")
      ->check(at_least(0));
  app.add_option("--chunk-heads", a->opt.chunk_heads, "heads per chunk (0: see --chunk-seqs)")
      ->check(at_least(0));
  app.add_flag("--force", a->opt.force, "overwrite an existing output file");
  app.add_flag("--allow-extrapolation", a->opt.allow_extrapolation,
               "allow --seq-len beyond the model's trained context");
  app.add_option("--max-bytes", a->max_bytes,
                 "read at most this many bytes of text (0: as much as the sequences need)");
  app.add_option("--threads", a->threads, "threads (0: all cores)")->check(at_least(0));
  app.add_flag("--quiet,-q", a->quiet, "no summary on stderr");
  add_bos_flags(app, a->bos);
  return [a]() {
    set_threads(a->threads);
    DumpOptions o = a->opt;
    o.tensors = a->tensors;
    o.dtype = a->dtype == "f16" ? DType::F16 : DType::F32;
    check_dump_options(o, a->out);  // before the model and text load
    LoadedModel lm = load_model_and_tokenizer(a->model, a->tokenizer);
    apply_bos_flags(a->bos, *lm.tokenizer, lm.tokenizer_path);
    const Model& m = lm.model;
    const Tokenizer* tok = lm.tokenizer.get();
    const std::filesystem::path& tp = lm.tokenizer_path;
    TextSpec ts;
    ts.path = a->text;
    ts.format = (a->format.empty() ? ts.path.extension() == ".jsonl" : a->format == "jsonl")
                    ? TextSpec::Jsonl
                    : TextSpec::Plain;
    ts.jsonl_field = a->field;
    ts.doc_separator = a->separator;
    ts.max_docs = a->max_docs;
    ts.max_bytes = a->max_bytes;
    const std::vector<int32_t> stream = read_dump_stream(
        *tok, ts, int64_t(o.n_seq) * (o.seq_len ? o.seq_len : m.config.default_seq_len()));
    const DumpSource src{m.name, m.files, tp, tok->kind(), ts.path, format_name(ts.format), {}, {}};
    // On a terminal: sequences done, MB handed to HDF5, elapsed and ETA, redrawn in place.
    StatusLine status(!a->quiet && dist::root());  // under MPI, rank 0 shows its own share
    const auto t0 = std::chrono::steady_clock::now();
    if (status.enabled())
      o.on_sequence = [&](int done, int total, int64_t bytes) {
        const double el =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        status.update(fmt::format("{}: {}/{} sequences, {:.1f} MB written, {}", a->out, done, total,
                                  bytes / 1e6, elapsed_eta(el, done, total)),
                      done == total);
      };
    const DumpStats st = dump_kv(m, *tok, stream, o, src, a->out);
    status.finish();
    if (!a->quiet && dist::root())
      std::fprintf(stderr,
                   "%s: %d sequences x %d tokens, %.1f MB of tensors (%.1f MB on disk) in %.2f s: "
                   "%.0f%% forward pass, %.0f%% writing\n",
                   a->out.c_str(), st.n_seq, st.seq_len, st.tensor_bytes / 1e6, st.file_bytes / 1e6,
                   st.seconds, 100.0 * st.forward_seconds / st.seconds,
                   100.0 * st.write_seconds / st.seconds);
    return 0;
  };
}

}  // namespace kvscope::cli
