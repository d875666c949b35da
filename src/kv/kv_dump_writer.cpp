// dump_kv: runs the model over consecutive windows of a text and streams each layer's
// tensors into a DumpFile (src/kv/kv_dump_file.cpp) as the forward pass produces them.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <set>

#include "kv_dump_file.hpp"
#include "kvscope/io/atomic_file.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/run_lock.hpp"
#include "kvscope/kv/kv_dump.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/forward.hpp"

namespace kvscope {

namespace fs = std::filesystem;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Hands each layer's captures to the file, timing the writes (they happen inside the
// forward pass but are not forward-pass time). For f32 dumps the forward pass writes
// Q/K/V captures straight into the file's write buffers (capture_target).
class DumpObserver : public ForwardObserver {
 public:
  DumpObserver(DumpFile& f, const std::vector<std::string>& tensors)
      : f_(f), tensors_(tensors), in_slot_(tensors.size(), false) {}
  int seq = 0;
  double write_seconds = 0.0;

  float* capture_target(int layer, CaptureKind kind, size_t n) override {
    const char* name = kind == CaptureKind::kQ          ? "q"
                       : kind == CaptureKind::kKPreRope ? "k_pre_rope"
                       : kind == CaptureKind::kK        ? "k"
                                                        : "v";
    for (size_t i = 0; i < tensors_.size(); ++i)
      if (tensors_[i] == name) {
        float* p = f_.tensor_slot(layer, i, seq, n);
        in_slot_[i] = p != nullptr;
        return p;
      }
    return nullptr;
  }

  void on_layer(const LayerCapture& c) override {
    const double t0 = now();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (in_slot_[i]) {  // already in place
        f_.commit_tensor(c.layer, i, seq);
        in_slot_[i] = false;
        continue;
      }
      const std::string& n = tensors_[i];
      const float* src = n == "k_pre_rope" ? c.k_pre_rope
                         : n == "k"        ? c.k
                         : n == "v"        ? c.v
                         : n == "q"        ? c.q
                                           : head_major_attn_out(c);
      f_.stage_tensor(c.layer, i, seq, src);
    }
    write_seconds += now() - t0;
  }

 private:
  // attn_out arrives token-major [T, n_heads*hd]; the file wants [n_heads, T, hd].
  const float* head_major_attn_out(const LayerCapture& c) {
    buf_.resize(size_t(c.n_heads) * c.n_tokens * c.head_dim);
    for (int t = 0; t < c.n_tokens; ++t)
      for (int h = 0; h < c.n_heads; ++h)
        std::memcpy(buf_.data() + (size_t(h) * c.n_tokens + t) * c.head_dim,
                    c.attn_out + (size_t(t) * c.n_heads + h) * c.head_dim,
                    sizeof(float) * size_t(c.head_dim));
    return buf_.data();
  }

  DumpFile& f_;
  const std::vector<std::string>& tensors_;
  std::vector<bool> in_slot_;  // this layer's capture i was written into the file's slot
  std::vector<float> buf_;
};

void rename_into_place(const fs::path& partial, const fs::path& out, const std::string& where) {
  std::error_code ec;
  fs::rename(partial, out, ec);
  if (ec) {
    const std::string why = ec.message();  // before remove() reuses ec
    fs::remove(partial, ec);
    throw Error(fmt::format("{}: cannot rename {} into place: {}", where, partial.string(), why));
  }
}

// The tokenizer's spelling of every id (/vocab).
std::vector<std::string> vocab_of(const Tokenizer& tok) {
  std::vector<std::string> vocab(size_t(tok.vocab_size()));
  for (int32_t id = 0; id < tok.vocab_size(); ++id) vocab[size_t(id)] = tok.piece(id);
  return vocab;
}

// The shards every rank wrote and `out` over them (rank 0, after all shards are complete).
void write_stitched(const ModelConfig& c, const DumpOptions& opt, const DumpSource& described,
                    int32_t bos, const std::vector<std::string>& vocab, const fs::path& out,
                    const std::string& where) {
  std::vector<DumpShard> shards;
  for (int r = 0; r < dist::size(); ++r) {
    const dist::Block b = dist::block_of(opt.n_seq, r);
    if (b.count > 0) shards.push_back({shard_name(out, r, dist::size()), b.first, b.count});
  }
  fs::path partial = out;
  partial += ".partial";
  RemoveOnSignal on_signal(partial);
  try {
    DumpFile file(partial, c, opt, described, bos, vocab, shards);
    file.finish();
  } catch (...) {
    std::error_code ec;
    fs::remove(partial, ec);
    throw;
  }
  rename_into_place(partial, out, where);
}

}  // namespace

std::string shard_name(const fs::path& out, int rank, int ranks) {
  return fmt::format("{}.rank{}of{}{}", out.stem().string(), rank, ranks,
                     out.has_extension() ? out.extension().string() : std::string(".h5"));
}

void check_dump_options(const DumpOptions& o, const std::string& where) {
  KV_CHECK(o.seq_len == 0 || o.seq_len >= 2,
           "{}: seq_len must be 0 (the model's context) or at least 2, got {}", where, o.seq_len);
  KV_CHECK(o.n_seq >= 1, "{}: n_seq must be at least 1, got {}", where, o.n_seq);
  KV_CHECK(o.dtype == DType::F32 || o.dtype == DType::F16,
           "{}: dump dtype must be f32 or f16, got {}", where, dtype_name(o.dtype));
  KV_CHECK(o.gzip >= 0 && o.gzip <= 9, "{}: gzip level must be 0..9, got {}", where, o.gzip);
  KV_CHECK(o.chunk_seqs >= 0 && o.chunk_heads >= 0,
           "{}: chunk_seqs and chunk_heads must be >= 0, got {} and {}", where, o.chunk_seqs,
           o.chunk_heads);
  KV_CHECK(!o.tensors.empty() || o.logits, "{}: nothing to dump (no tensors, no logits)", where);
  std::set<std::string> seen;
  for (const std::string& t : o.tensors) {
    const auto& names = dump_tensor_names();
    KV_CHECK(std::find(names.begin(), names.end(), t) != names.end(),
             "{}: unknown tensor '{}' (known: k_pre_rope, k, v, q, attn_out)", where, t);
    KV_CHECK(seen.insert(t).second, "{}: tensor '{}' listed twice", where, t);
  }
}

namespace {

// What must hold of the model and the output path before anything is written.
void check_dump_target(const Model& m, const DumpOptions& opt, const fs::path& out,
                       const std::string& where) {
  check_dump_options(opt, where);
  KV_CHECK(opt.seq_len <= m.config.max_seq_len || opt.allow_extrapolation,
           "{}: seq_len {} exceeds the context of {} tokens model '{}' was trained for; pass "
           "--allow-extrapolation (YAML: allow_extrapolation: true) to dump beyond it",
           where, opt.seq_len, m.config.max_seq_len, m.name);
  KV_CHECK(!fs::is_directory(out),
           "{}: is a directory; expected the path of an .h5 file to "
           "write (--force replaces files, never directories)",
           where);
  KV_CHECK(opt.force || !fs::exists(out), "{}: output exists; pass --force to overwrite", where);
  KV_CHECK(out.has_filename() && (out.parent_path().empty() || fs::is_directory(out.parent_path())),
           "{}: the directory {} does not exist; create it first", where,
           out.parent_path().string());
  KV_CHECK(!m.config.compressed_keys(),
           "{}: model '{}' compresses its keys after RoPE (a reduced model); dumps need the "
           "original model",
           where, m.name);
}

// Writes this rank's block of sequences (`mine`, of the whole dump's offsets) into `file`
// (the .partial name) and closes it; the time split goes into st (closing counts as
// writing).
struct SequenceWriter {
  const Model& m;
  std::span<const int32_t> stream;
  const DumpOptions& opt;
  const std::vector<size_t>& offsets;
  int32_t bos;
  dist::Block mine;

  void run(std::optional<DumpFile>& holder, DumpObserver& obs, DumpStats& st) const {
    DumpFile& file = *holder;
    const int T = opt.seq_len, N = opt.n_seq;
    RunState rs(m.config, T);
    std::vector<int32_t> seq;
    double forward_total = 0.0, outside = 0.0;
    int64_t doc = -1;  // document index: BOS tokens of the stream seen so far, less one
    size_t scanned = 0;
    for (int i = 0; i < N; ++i) {
      const size_t off = offsets[size_t(i)];
      // The sequence's first text token: the one after the BOS that starts the window (a
      // document's own BOS, or the one prepended), at `off` itself when the window does not
      // start at a BOS. Its document: the BOS tokens of the stream up to it, less one.
      const size_t first = off + ((bos >= 0 && stream[off] == bos) ? 1 : 0);
      for (; scanned <= first && scanned < stream.size(); ++scanned)
        doc += bos >= 0 && stream[scanned] == bos;
      if (i < mine.first || i >= mine.first + mine.count) continue;  // another rank's
      const int at = i - int(mine.first);                            // index in this file
      seq = sequence_tokens(stream, off, T, bos);
      rs.reset();
      obs.seq = at;
      ForwardOptions fo;
      fo.observer = opt.tensors.empty() ? nullptr : &obs;
      fo.logits = opt.logits ? LogitsMode::kAll : LogitsMode::kNone;
      const double t0 = now();
      const auto logits = forward(m, rs, seq, fo);
      const double t1 = now();
      forward_total += t1 - t0;
      file.stage_tokens(at, seq.data());
      file.stage_source(at, int64_t(first), std::max<int64_t>(doc, 0));
      if (opt.logits) file.stage_logits(at, logits.data());
      outside += now() - t1;
      if (opt.on_sequence) opt.on_sequence(at + 1, int(mine.count), file.tensor_bytes());
    }
    const double t2 = now();
    file.finish();
    st.tensor_bytes = file.tensor_bytes();
    holder.reset();  // closes the file
    outside += now() - t2;
    st.write_seconds = obs.write_seconds + outside;
    st.forward_seconds = forward_total - obs.write_seconds;
  }
};

}  // namespace

DumpStats dump_kv(const Model& m, const Tokenizer& tok, std::span<const int32_t> stream,
                  const DumpOptions& opt_in, const DumpSource& src, const fs::path& out) {
  const double t_start = now();
  h5::init();
  const std::string where = out.string();
  DumpOptions opt = opt_in;
  if (opt.seq_len == 0) opt.seq_len = m.config.default_seq_len();
  check_dump_target(m, opt, out, where);
  const int T = opt.seq_len, N = opt.n_seq;
  const int32_t bos = tok.sequence_bos();
  const std::vector<size_t> offsets =
      plan_sequences(stream, T, N, bos, src.text_file.string(), opt.keys);
  // Under MPI (docs/distributed.md) rank r writes its block of sequences to a shard file
  // beside `out`; once every shard is complete, rank 0 writes `out` itself, whose datasets
  // are virtual datasets over the shards. Alone, the whole dump goes straight into `out`.
  const int ranks = dist::size();
  const dist::Block mine = dist::block_of(N, dist::rank());
  const fs::path target =
      ranks > 1 ? out.parent_path() / shard_name(out, dist::rank(), ranks) : out;

  // A second dump to the same file waits for nobody: it is refused by name (the partial
  // file below is then this process's alone to remove and rename).
  const OutputLock lock(target.parent_path().empty() ? fs::path(".") : target.parent_path(),
                        target.filename().string());
  fs::path partial = target;
  partial += ".partial";
  std::error_code ec;
  fs::remove(partial, ec);  // left by a killed earlier dump to the same output
  RemoveOnSignal on_signal(partial);
  DumpStats st;
  st.n_seq = N;
  st.seq_len = T;
  const std::vector<std::string> vocab = vocab_of(tok);
  DumpSource described = src;
  described.model_format = m.format;
  described.stored_dtypes = m.stored_dtypes;
  // An old `out` over shards of the same names must not outlive them half-rewritten.
  if (ranks > 1 && dist::root() && opt.force) fs::remove(out, ec);
  // A rank with no sequences (n_seq < ranks) writes no shard.
  if (mine.count > 0) {
    try {
      DumpOptions local = opt;
      local.n_seq = int(mine.count);
      std::optional<DumpFile> file(std::in_place, partial, m.config, local, described, bos, vocab);
      DumpObserver obs(*file, opt.tensors);
      SequenceWriter{m, stream, opt, offsets, bos, mine}.run(file, obs, st);
    } catch (...) {  // the file is closed: its destructor ran
      fs::remove(partial, ec);
      throw;
    }
    rename_into_place(partial, target, where);
  }
  if (ranks > 1) {
    // Every shard is complete before any rank goes on (a rank that died never gets here,
    // and mpirun then ends the others): only then does rank 0 write `out`.
    dist::barrier();
    std::vector<int64_t> bytes{st.tensor_bytes};
    dist::sum_int64(bytes);
    st.tensor_bytes = bytes[0];
    if (dist::root()) write_stitched(m.config, opt, described, bos, vocab, out, where);
    dist::barrier();
    st.file_bytes = int64_t(fs::file_size(out));
    for (int r = 0; r < ranks; ++r)
      if (dist::block_of(N, r).count > 0)
        st.file_bytes += int64_t(fs::file_size(out.parent_path() / shard_name(out, r, ranks)));
  } else {
    st.file_bytes = int64_t(fs::file_size(out));
  }
  st.seconds = now() - t_start;
  return st;
}

}  // namespace kvscope
