// Writes K/V dumps (docs/hdf5-schema.md). Memory is bounded by one sequence's activations
// plus, per dataset, an HDF5 chunk cache of at most one row of chunks: nothing grows
// with the number of sequences.
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "hdf5_util.hpp"
#include "kvscope/checksum.hpp"
#include "kvscope/error.hpp"
#include "kvscope/forward.hpp"
#include "kvscope/kv_dump.hpp"
#include "kvscope/manifest.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using h5::Handle;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Dataset {
  Handle id;
  int heads = 0;  // per-head tensors; 0 for /tokens, /logits
};

// Writes one sequence's slice of each captured tensor as the layers come out.
class DumpObserver : public ForwardObserver {
 public:
  DumpObserver(std::vector<std::vector<Dataset*>> by_layer, const std::vector<std::string>& names,
               DType dtype, int seq_len, int head_dim, std::string where)
      : by_layer_(std::move(by_layer)),
        names_(names),
        dtype_(dtype),
        T_(seq_len),
        hd_(head_dim),
        where_(std::move(where)) {}

  int seq = 0;  // sequence index being written
  double write_seconds = 0.0;
  int64_t bytes = 0;

  void on_layer(const LayerCapture& c) override {
    const double t0 = now();
    for (size_t i = 0; i < names_.size(); ++i) {
      const std::string& n = names_[i];
      const float* src = nullptr;
      if (n == "k_pre_rope")
        src = c.k_pre_rope;
      else if (n == "k")
        src = c.k;
      else if (n == "v")
        src = c.v;
      else if (n == "q")
        src = c.q;
      else {  // attn_out: [T, n_heads*hd] -> [n_heads, T, hd]
        buf_.resize(size_t(c.n_heads) * T_ * hd_);
        for (int t = 0; t < T_; ++t)
          for (int h = 0; h < c.n_heads; ++h)
            std::memcpy(buf_.data() + (size_t(h) * T_ + t) * hd_,
                        c.attn_out + (size_t(t) * c.n_heads + h) * hd_, sizeof(float) * hd_);
        src = buf_.data();
      }
      write_slice(*by_layer_[size_t(c.layer)][i], src);
    }
    write_seconds += now() - t0;
  }

  // Writes [heads, T, hd] floats as row `seq` of a [n_seq, heads, T, hd] dataset.
  void write_slice(const Dataset& d, const float* src) {
    const hsize_t start[4] = {hsize_t(seq), 0, 0, 0};
    const hsize_t count[4] = {1, hsize_t(d.heads), hsize_t(T_), hsize_t(hd_)};
    const size_t n = size_t(d.heads) * T_ * hd_;
    Handle fspace(h5::check(H5Dget_space(d.id), where_, "H5Dget_space"), H5Sclose);
    h5::check_status(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, count, nullptr),
                     where_, "H5Sselect_hyperslab");
    Handle mspace(h5::check(H5Screate_simple(4, count, nullptr), where_, "H5Screate_simple"),
                  H5Sclose);
    if (dtype_ == DType::F16) {
      half_.resize(n);
      for (size_t i = 0; i < n; ++i) half_[i] = static_cast<_Float16>(src[i]);
      h5::check_status(H5Dwrite(d.id, h5::f16_type(), mspace, fspace, H5P_DEFAULT, half_.data()),
                       where_, "writing tensor data");
      bytes += int64_t(n * 2);
    } else {
      h5::check_status(H5Dwrite(d.id, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, src), where_,
                       "writing tensor data");
      bytes += int64_t(n * 4);
    }
  }

 private:
  std::vector<std::vector<Dataset*>> by_layer_;  // [layer][tensor]
  std::vector<std::string> names_;
  DType dtype_;
  int T_, hd_;
  std::string where_;
  std::vector<float> buf_;
  std::vector<_Float16> half_;
};

void check_options(const DumpOptions& o, const ModelConfig& c, const std::string& where) {
  KV_CHECK(o.seq_len >= 2, "{}: seq_len must be at least 2, got {}", where, o.seq_len);
  KV_CHECK(o.n_seq >= 1, "{}: n_seq must be at least 1, got {}", where, o.n_seq);
  KV_CHECK(o.dtype == DType::F32 || o.dtype == DType::F16,
           "{}: dump dtype must be f32 or f16, got {}", where, dtype_name(o.dtype));
  KV_CHECK(o.gzip >= 0 && o.gzip <= 9, "{}: gzip level must be 0..9, got {}", where, o.gzip);
  KV_CHECK(o.chunk_seqs >= 1 && o.chunk_heads >= 1,
           "{}: chunk_seqs and chunk_heads must be >= 1, got {} and {}", where, o.chunk_seqs,
           o.chunk_heads);
  KV_CHECK(!o.tensors.empty() || o.logits, "{}: nothing to dump (no tensors, no logits)", where);
  std::set<std::string> seen;
  for (const std::string& t : o.tensors) {
    bool known = false;
    for (const std::string& n : dump_tensor_names()) known |= n == t;
    KV_CHECK(known, "{}: unknown tensor '{}' (known: k_pre_rope, k, v, q, attn_out)", where, t);
    KV_CHECK(seen.insert(t).second, "{}: tensor '{}' listed twice", where, t);
  }
  (void)c;
}

// Combined sha256 of a model's files: the file's own hash for one file, else the hash of
// the sorted "NAME  HASH" lines (and the list itself goes in model_files).
std::pair<std::string, std::string> model_hashes(const std::vector<fs::path>& files) {
  nlohmann::json list = nlohmann::json::object();
  std::string lines, single;
  std::vector<std::pair<std::string, std::string>> rows;
  for (const fs::path& f : files) rows.push_back({f.filename().string(), sha256_file(f)});
  std::sort(rows.begin(), rows.end());
  for (const auto& [n, h] : rows) {
    list[n] = h;
    lines += n + "  " + h + "\n";
  }
  return {rows.size() == 1 ? rows[0].second : sha256_string(lines), list.dump()};
}

}  // namespace

std::vector<size_t> plan_sequences(std::span<const int32_t> stream, int seq_len, int n_seq,
                                   int32_t bos) {
  std::vector<size_t> offsets;
  size_t off = 0;
  while (int(offsets.size()) < n_seq) {
    // Tokens taken from the stream: seq_len when the window starts at a BOS, else one
    // fewer (a BOS is put in front).
    const bool starts_with_bos = bos >= 0 && off < stream.size() && stream[off] == bos;
    const size_t take = starts_with_bos || bos < 0 ? size_t(seq_len) : size_t(seq_len - 1);
    KV_CHECK(off + take <= stream.size(),
             "the text gives only {} sequences of {} tokens ({} tokens in all), {} were asked for",
             offsets.size(), seq_len, stream.size(), n_seq);
    offsets.push_back(off);
    off += take;
  }
  return offsets;
}

DumpStats dump_kv(const Model& m, const Tokenizer& tok, std::span<const int32_t> stream,
                  const DumpOptions& opt_in, const DumpSource& src, const fs::path& out) {
  const double t_start = now();
  h5::init();
  const std::string where = out.string();
  const ModelConfig& c = m.config;
  DumpOptions opt = opt_in;
  if (opt.seq_len == 0) opt.seq_len = c.max_seq_len;
  check_options(opt, c, where);
  KV_CHECK(opt.force || !fs::exists(out), "{}: output exists; pass --force to overwrite", where);
  const int T = opt.seq_len, hd = c.head_dim, N = opt.n_seq;
  const int32_t bos = tok.bos_id;
  const std::vector<size_t> offsets = plan_sequences(stream, T, N, bos);
  // Document index of every stream position is only needed at the window starts.
  std::vector<int64_t> doc_of(offsets.size(), 0);
  {
    int64_t doc = -1;
    size_t j = 0;
    for (size_t p = 0; p < stream.size() && j < offsets.size(); ++p) {
      if (bos >= 0 && stream[p] == bos) ++doc;
      while (j < offsets.size() && offsets[j] == p) doc_of[j++] = std::max<int64_t>(doc, 0);
    }
  }
  const auto [model_sha, model_files] = model_hashes(src.model_files);
  const std::string tok_sha = src.tokenizer_file.empty() ? "" : sha256_file(src.tokenizer_file);
  const std::string text_sha = src.text_file.empty() ? "" : sha256_file(src.text_file);

  fs::path partial = out;
  partial += ".partial";
  std::error_code ec;
  fs::remove(partial, ec);
  DumpStats st;
  st.n_seq = N;
  st.seq_len = T;
  try {
    // Scoped so every handle is closed before the rename.
    {
      Handle file(h5::check(H5Fcreate(partial.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                            partial.string(), "creating the file"),
                  H5Fclose);
      const std::string pw = partial.string();
      // Root attributes: what made this file.
      const GitInfo git = git_info(KVSCOPE_SOURCE_DIR);
      h5::write_attr(file, "kvscope_version", std::string(KVSCOPE_VERSION), pw);
      h5::write_attr(file, "git_commit", git.commit + (git.dirty ? "-dirty" : ""), pw);
      h5::write_attr(file, "created_utc", utc_now_iso8601(), pw);
      h5::write_attr(file, "model_name", src.model_name, pw);
      h5::write_attr(file, "model_sha256", model_sha, pw);
      h5::write_attr(file, "model_files", model_files, pw);
      h5::write_attr(file, "n_layers", int64_t(c.n_layers), pw);
      h5::write_attr(file, "n_heads", int64_t(c.n_heads), pw);
      h5::write_attr(file, "n_kv_heads", int64_t(c.n_kv_heads), pw);
      h5::write_attr(file, "head_dim", int64_t(c.head_dim), pw);
      h5::write_attr(file, "dim", int64_t(c.dim), pw);
      h5::write_attr(file, "hidden_dim", int64_t(c.hidden_dim), pw);
      h5::write_attr(file, "vocab_size", int64_t(c.vocab_size), pw);
      h5::write_attr(file, "max_seq_len", int64_t(c.max_seq_len), pw);
      h5::write_attr(file, "positional", positional_name(c.positional), pw);
      h5::write_attr(file, "rope_layout", rope_layout_name(c.rope_layout), pw);
      h5::write_attr(file, "rope_theta", double(c.rope_theta), pw);
      h5::write_attr(file, "norm_eps", double(c.norm_eps), pw);
      h5::write_attr(file, "tokenizer_kind", src.tokenizer_kind, pw);
      h5::write_attr(file, "tokenizer_file", src.tokenizer_file.string(), pw);
      h5::write_attr(file, "tokenizer_sha256", tok_sha, pw);
      h5::write_attr(file, "bos_id", int64_t(bos), pw);
      h5::write_attr(file, "text_file", src.text_file.string(), pw);
      h5::write_attr(file, "text_format", src.text_format, pw);
      h5::write_attr(file, "text_sha256", text_sha, pw);
      h5::write_attr(file, "n_seq", int64_t(N), pw);
      h5::write_attr(file, "seq_len", int64_t(T), pw);
      h5::write_attr(file, "dtype", std::string(opt.dtype == DType::F16 ? "f16" : "f32"), pw);
      h5::write_attr(file, "gzip", int64_t(opt.gzip), pw);
      h5::write_attr(file, "sequence_rule",
                     std::string("consecutive windows of the token stream ([BOS] + encode(doc) per "
                                 "document); each sequence starts with BOS"),
                     pw);

      const hid_t ftype = opt.dtype == DType::F16 ? h5::f16_type() : H5T_IEEE_F32LE;
      const size_t esz = dtype_size(opt.dtype);
      auto make_dataset = [&](hid_t loc, const std::string& name, std::vector<hsize_t> shape,
                              std::vector<hsize_t> chunk, hid_t type, size_t elem_size,
                              const std::string& axes) {
        Handle dcpl(h5::check(H5Pcreate(H5P_DATASET_CREATE), pw, "H5Pcreate"), H5Pclose);
        h5::check_status(H5Pset_chunk(dcpl, int(chunk.size()), chunk.data()), pw, "H5Pset_chunk");
        if (opt.gzip > 0) {
          h5::check_status(H5Pset_shuffle(dcpl), pw, "H5Pset_shuffle");
          h5::check_status(H5Pset_deflate(dcpl, unsigned(opt.gzip)), pw, "H5Pset_deflate");
        }
        // Chunk cache: none when every write covers whole chunks (chunks go straight to
        // disk); one row of chunks (plus slack) when chunks span several sequences.
        size_t chunk_bytes = elem_size;
        for (hsize_t d : chunk) chunk_bytes *= d;
        size_t row_chunks = 1;
        for (size_t i = 1; i < shape.size(); ++i)
          row_chunks *= (shape[i] + chunk[i] - 1) / chunk[i];
        const size_t cache = chunk[0] > 1 ? chunk_bytes * row_chunks + 1 : 0;
        Handle dapl(h5::check(H5Pcreate(H5P_DATASET_ACCESS), pw, "H5Pcreate"), H5Pclose);
        h5::check_status(H5Pset_chunk_cache(dapl, 1009, cache, 1.0), pw, "H5Pset_chunk_cache");
        Handle space(h5::check(H5Screate_simple(int(shape.size()), shape.data(), nullptr), pw,
                               "H5Screate_simple"),
                     H5Sclose);
        Handle d(h5::check(H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, dcpl, dapl), pw,
                           ("creating dataset " + name).c_str()),
                 H5Dclose);
        h5::write_attr(d, "axes", axes, pw);
        return d;
      };

      // /tokens, /sources
      Dataset tokens;
      tokens.id = make_dataset(file, "tokens", {hsize_t(N), hsize_t(T)}, {1, hsize_t(T)},
                               H5T_STD_I32LE, 4, "sequence,position");
      const std::string text_name = src.text_file.string();
      Handle src_type(h5::check(H5Tcreate(H5T_COMPOUND, 16 + std::max<size_t>(1, text_name.size())),
                                pw, "H5Tcreate"),
                      H5Tclose);
      Handle str_type(h5::check(H5Tcopy(H5T_C_S1), pw, "H5Tcopy"), H5Tclose);
      H5Tset_size(str_type, std::max<size_t>(1, text_name.size()));
      H5Tinsert(src_type, "token_offset", 0, H5T_NATIVE_INT64);
      H5Tinsert(src_type, "document", 8, H5T_NATIVE_INT64);
      H5Tinsert(src_type, "file", 16, str_type);
      Dataset sources;
      sources.id = make_dataset(file, "sources", {hsize_t(N)}, {std::min<hsize_t>(N, 1024)},
                                src_type, 16 + text_name.size(), "sequence");
      h5::write_attr(sources.id, "description",
                     std::string("token_offset: index in the token stream of the first token "
                                 "taken from the text; document: index of the document it is in"),
                     pw);
      Dataset logits;
      if (opt.logits)
        logits.id = make_dataset(file, "logits", {hsize_t(N), hsize_t(T), hsize_t(c.vocab_size)},
                                 {1, hsize_t(T), hsize_t(c.vocab_size)}, ftype, esz,
                                 "sequence,position,vocab");

      // /layer_NN/<tensor>
      std::vector<Handle> groups;
      std::vector<Dataset> per_head;  // [layer * n_tensors + tensor]
      per_head.reserve(size_t(c.n_layers) * opt.tensors.size());
      for (int l = 0; l < c.n_layers; ++l) {
        const std::string g = fmt::format("layer_{:02d}", l);
        groups.emplace_back(
            h5::check(H5Gcreate2(file, g.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), pw,
                      "creating a layer group"),
            H5Gclose);
        for (const std::string& t : opt.tensors) {
          const bool qside = t == "q" || t == "attn_out";
          const int heads = qside ? c.n_heads : c.n_kv_heads;
          Dataset d;
          d.heads = heads;
          d.id = make_dataset(
              groups.back(), t, {hsize_t(N), hsize_t(heads), hsize_t(T), hsize_t(hd)},
              {hsize_t(std::min(opt.chunk_seqs, N)), hsize_t(std::min(opt.chunk_heads, heads)),
               hsize_t(T), hsize_t(hd)},
              ftype, esz,
              qside ? "sequence,head,position,head_dim" : "sequence,kv_head,position,head_dim");
          const char* what = t == "k_pre_rope" ? "keys before RoPE"
                             : t == "k"        ? "keys after RoPE (as cached)"
                             : t == "v"        ? "values"
                             : t == "q"        ? "queries after RoPE"
                                               : "per-head attention output, before W_O";
          h5::write_attr(d.id, "description", std::string(what), pw);
          per_head.push_back(std::move(d));
        }
      }
      std::vector<std::vector<Dataset*>> by_layer(size_t(c.n_layers));
      for (int l = 0; l < c.n_layers; ++l)
        for (size_t i = 0; i < opt.tensors.size(); ++i)
          by_layer[size_t(l)].push_back(&per_head[size_t(l) * opt.tensors.size() + i]);

      DumpObserver obs(by_layer, opt.tensors, opt.dtype, T, hd, pw);
      RunState rs(c, T);
      std::vector<int32_t> seq;
      std::vector<char> src_row(16 + std::max<size_t>(1, text_name.size()), 0);
      double forward_total = 0.0;   // forward() calls, including the per-layer writes
      double outside_writes = 0.0;  // tokens, sources, logits
      for (int i = 0; i < N; ++i) {
        seq.clear();
        const size_t off = offsets[size_t(i)];
        if (bos >= 0 && stream[off] != bos) seq.push_back(bos);
        seq.insert(seq.end(), stream.begin() + long(off),
                   stream.begin() + long(off) + (T - long(seq.size())));
        KV_ASSERT(int(seq.size()) == T);
        rs.reset();
        obs.seq = i;
        ForwardOptions fo;
        fo.observer = opt.tensors.empty() ? nullptr : &obs;
        fo.logits = opt.logits ? LogitsMode::kAll : LogitsMode::kNone;
        const double t0 = now();
        const auto lg = forward(m, rs, seq, fo);
        forward_total += now() - t0;
        const double t1 = now();
        const hsize_t one = 1;
        {  // tokens row
          const hsize_t start[2] = {hsize_t(i), 0}, count[2] = {1, hsize_t(T)};
          Handle fs_(h5::check(H5Dget_space(tokens.id), pw, "H5Dget_space"), H5Sclose);
          H5Sselect_hyperslab(fs_, H5S_SELECT_SET, start, nullptr, count, nullptr);
          Handle ms(h5::check(H5Screate_simple(2, count, nullptr), pw, "H5Screate_simple"),
                    H5Sclose);
          h5::check_status(H5Dwrite(tokens.id, H5T_NATIVE_INT32, ms, fs_, H5P_DEFAULT, seq.data()),
                           pw, "writing tokens");
        }
        {  // sources row
          const int64_t to = int64_t(off), doc = doc_of[size_t(i)];
          std::memcpy(src_row.data(), &to, 8);
          std::memcpy(src_row.data() + 8, &doc, 8);
          std::memcpy(src_row.data() + 16, text_name.data(), text_name.size());
          const hsize_t start = hsize_t(i);
          Handle fs_(h5::check(H5Dget_space(sources.id), pw, "H5Dget_space"), H5Sclose);
          H5Sselect_hyperslab(fs_, H5S_SELECT_SET, &start, nullptr, &one, nullptr);
          Handle ms(h5::check(H5Screate_simple(1, &one, nullptr), pw, "H5Screate_simple"),
                    H5Sclose);
          h5::check_status(H5Dwrite(sources.id, src_type, ms, fs_, H5P_DEFAULT, src_row.data()), pw,
                           "writing sources");
        }
        if (opt.logits) {
          const hsize_t start[3] = {hsize_t(i), 0, 0};
          const hsize_t count[3] = {1, hsize_t(T), hsize_t(c.vocab_size)};
          Handle fs_(h5::check(H5Dget_space(logits.id), pw, "H5Dget_space"), H5Sclose);
          H5Sselect_hyperslab(fs_, H5S_SELECT_SET, start, nullptr, count, nullptr);
          Handle ms(h5::check(H5Screate_simple(3, count, nullptr), pw, "H5Screate_simple"),
                    H5Sclose);
          if (opt.dtype == DType::F16) {
            std::vector<_Float16> h(lg.size());
            for (size_t j = 0; j < lg.size(); ++j) h[j] = static_cast<_Float16>(lg[j]);
            h5::check_status(H5Dwrite(logits.id, h5::f16_type(), ms, fs_, H5P_DEFAULT, h.data()),
                             pw, "writing logits");
          } else {
            h5::check_status(H5Dwrite(logits.id, H5T_NATIVE_FLOAT, ms, fs_, H5P_DEFAULT, lg.data()),
                             pw, "writing logits");
          }
          obs.bytes += int64_t(lg.size() * esz);
        }
        outside_writes += now() - t1;
      }
      st.tensor_bytes = obs.bytes;
      st.write_seconds = obs.write_seconds + outside_writes;
      // The per-layer writes happen inside forward(): they are not forward-pass time.
      st.forward_seconds = forward_total - obs.write_seconds;
      per_head.clear();
      groups.clear();
      tokens.id.reset();
      sources.id.reset();
      logits.id.reset();
      h5::check_status(H5Fflush(file, H5F_SCOPE_GLOBAL), pw, "flushing the file");
    }
  } catch (...) {
    fs::remove(partial, ec);
    throw;
  }
  fs::rename(partial, out, ec);
  if (ec) {
    fs::remove(partial, ec);
    throw Error(
        fmt::format("{}: cannot rename {} into place: {}", where, partial.string(), ec.message()));
  }
  st.file_bytes = int64_t(fs::file_size(out));
  st.seconds = now() - t_start;
  return st;
}

}  // namespace kvscope
