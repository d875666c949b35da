#include "kv_dump_file.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "kvscope/io/checksum.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/provenance.hpp"
#include "kvscope/model/hf_config.hpp"
#include "kvscope/model/model.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using h5::Handle;

RowBatch::RowBatch(Handle dataset, hid_t mem_type, std::vector<hsize_t> row_shape, size_t row_bytes,
                   int batch, std::string where)
    : dataset_(std::move(dataset)),
      mem_type_(mem_type),
      row_shape_(std::move(row_shape)),
      row_bytes_(row_bytes),
      batch_(std::max(1, batch)),
      buf_(row_bytes * size_t(std::max(1, batch))),
      where_(std::move(where)) {}

void RowBatch::stage(int seq, const void* row) {
  std::memcpy(slot(seq), row, row_bytes_);
  commit(seq);
}

void* RowBatch::slot(int seq) {
  if (count_ == 0) first_ = seq;
  KV_ASSERT(seq == first_ + count_);
  return buf_.data() + size_t(count_) * row_bytes_;
}

void RowBatch::commit(int seq) {
  KV_ASSERT(seq == first_ + count_);
  if (++count_ == batch_) flush();
}

void RowBatch::flush() {
  if (count_ > 0) write(buf_.data());
}

void RowBatch::write(const void* rows) {
  std::vector<hsize_t> start(row_shape_.size() + 1, 0), count(row_shape_.size() + 1);
  start[0] = hsize_t(first_);
  count[0] = hsize_t(count_);
  std::copy(row_shape_.begin(), row_shape_.end(), count.begin() + 1);
  Handle fspace(h5::check(H5Dget_space(dataset_), where_, "H5Dget_space"), H5Sclose);
  h5::check_status(
      H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
      where_, "H5Sselect_hyperslab");
  Handle mspace(h5::check(H5Screate_simple(int(count.size()), count.data(), nullptr), where_,
                          "H5Screate_simple"),
                H5Sclose);
  h5::check_status(H5Dwrite(dataset_, mem_type_, mspace, fspace, H5P_DEFAULT, rows), where_,
                   "writing data");
  count_ = 0;
}

namespace {

// Rows per write of contiguous data: up to kBatchBytes, at most kBatchRows sequences.
// HDF5 writes of >= 512 KB run near a plain write's speed (bench/bench_dump.cpp); the row
// cap makes every dump of 8 or more sequences hold exactly the same buffers.
constexpr size_t kBatchBytes = size_t(2) << 20;
constexpr int kBatchRows = 8;

// sha256 of a model: the file's own for one file, else of the sorted "NAME  HASH" lines;
// and the JSON list file -> hash.
std::pair<std::string, std::string> model_hashes(const std::vector<fs::path>& files) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (const fs::path& f : files) rows.push_back({f.filename().string(), sha256_file(f)});
  std::sort(rows.begin(), rows.end());
  nlohmann::json list = nlohmann::json::object();
  std::string lines;
  for (const auto& [n, h] : rows) {
    list[n] = h;
    lines += n + "  " + h + "\n";
  }
  // A file name need not be UTF-8 (Linux allows any bytes): replaced, never a throw.
  return {rows.size() == 1 ? rows[0].second : sha256_string(lines),
          list.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
}

// Maps sequences [first, first + count) of a [N, row...] dataset onto the whole dataset at
// `path` in each shard file. Unmapped or unreadable data reads as the fill value: NaN for
// floats, -1 for token ids, so a lost shard cannot pass for real activations.
void add_virtual_mappings(hid_t dcpl, const std::vector<hsize_t>& shape,
                          const std::vector<DumpShard>& shards, const std::string& path, hid_t type,
                          const std::string& w) {
  if (H5Tget_class(type) == H5T_FLOAT) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    h5::check_status(H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &nan), w, "H5Pset_fill_value");
  } else if (H5Tget_class(type) == H5T_INTEGER) {
    const int32_t none = -1;
    h5::check_status(H5Pset_fill_value(dcpl, H5T_NATIVE_INT32, &none), w, "H5Pset_fill_value");
  }
  Handle vspace(
      h5::check(H5Screate_simple(int(shape.size()), shape.data(), nullptr), w, "H5Screate_simple"),
      H5Sclose);
  for (const DumpShard& sh : shards) {
    std::vector<hsize_t> part = shape, start(shape.size(), 0);
    part[0] = hsize_t(sh.count);
    start[0] = hsize_t(sh.first);
    h5::check_status(
        H5Sselect_hyperslab(vspace, H5S_SELECT_SET, start.data(), nullptr, part.data(), nullptr), w,
        "selecting a shard's sequences");
    Handle sspace(
        h5::check(H5Screate_simple(int(part.size()), part.data(), nullptr), w, "H5Screate_simple"),
        H5Sclose);
    h5::check_status(H5Pset_virtual(dcpl, vspace, sh.file.c_str(), path.c_str(), sspace), w,
                     ("mapping " + path + " onto shard " + sh.file).c_str());
  }
}

// Creates the file with a small fixed metadata cache: HDF5's adaptive one grows (to
// 32 MB) with a chunk index, which would make memory depend on the number of sequences.
Handle create_dump_file(const fs::path& path, const std::string& w) {
  Handle fapl(h5::check(H5Pcreate(H5P_FILE_ACCESS), w, "H5Pcreate"), H5Pclose);
  H5AC_cache_config_t mdc;
  mdc.version = H5AC__CURR_CACHE_CONFIG_VERSION;
  h5::check_status(H5Pget_mdc_config(fapl, &mdc), w, "H5Pget_mdc_config");
  mdc.set_initial_size = true;
  mdc.initial_size = mdc.min_size = mdc.max_size = 1 << 20;
  mdc.incr_mode = H5C_incr__off;
  mdc.flash_incr_mode = H5C_flash_incr__off;
  mdc.decr_mode = H5C_decr__off;
  h5::check_status(H5Pset_mdc_config(fapl, &mdc), w, "H5Pset_mdc_config");
  return Handle(
      h5::check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), w, "creating the file"),
      H5Fclose);
}

// The root attributes: what made this file (docs/hdf5-schema.md lists them).
void write_root_attrs(hid_t file, const std::string& w, const ModelConfig& c,
                      const DumpOptions& opt, const DumpSource& src, int32_t bos,
                      const std::vector<DumpShard>& shards) {
  const auto [model_sha, model_files] = model_hashes(src.model_files);
  // The checkout the dump is made from (as a run's manifest records it), not the one the
  // binary was built in: a build tree's path compiled in says nothing about this run.
  const GitInfo git = git_info(std::filesystem::current_path());
  auto attr = [&](const char* n, const auto& v) { h5::write_attr(file, n, v, w); };
  attr("kvscope_version", std::string(KVSCOPE_VERSION));
  attr("git_commit", git.commit + (git.dirty ? "-dirty" : ""));
  attr("created_utc", utc_now_iso8601());
  attr("model_name", src.model_name);
  attr("model_sha256", model_sha);
  attr("model_files", model_files);
  attr("n_layers", int64_t(c.n_layers));
  attr("n_heads", int64_t(c.n_heads));
  attr("n_kv_heads", int64_t(c.n_kv_heads));
  attr("head_dim", int64_t(c.head_dim));
  attr("dim", int64_t(c.dim));
  attr("hidden_dim", int64_t(c.hidden_dim));
  attr("vocab_size", int64_t(c.vocab_size));
  attr("max_seq_len", int64_t(c.max_seq_len));
  attr("positional", positional_name(c.positional));
  attr("rope_layout", rope_layout_name(c.rope_layout));
  attr("rope_theta", double(c.rope_theta));
  attr("rope_scaling", rope_scaling_json(c.rope_scaling).dump());
  attr("model_type", std::string(family_name(c.family)));
  attr("model_format", src.model_format);
  attr("weight_dtypes", nlohmann::json(src.stored_dtypes).dump());
  attr("quantized_weights", int64_t(any_quantized(src.stored_dtypes)));
  attr("rotary_dim", int64_t(c.rot_dim()));
  attr("rope_local_theta", double(c.rope_local_theta));
  nlohmann::json windows = nlohmann::json::array();
  for (int l = 0; l < c.n_layers; ++l) windows.push_back(c.window_of(l));
  attr("sliding_windows", windows.dump());
  attr("norm_eps", double(c.norm_eps));
  attr("tokenizer_kind", src.tokenizer_kind);
  attr("tokenizer_file", src.tokenizer_file.string());
  attr("tokenizer_sha256",
       src.tokenizer_file.empty() ? std::string() : sha256_file(src.tokenizer_file));
  attr("bos_id", int64_t(bos));
  attr("text_file", src.text_file.string());
  attr("text_format", src.text_format);
  // A device or pipe (/dev/zero, <(cmd)) has no content to hash, and hashing would not end.
  attr("text_sha256", src.text_file.empty() || !fs::is_regular_file(src.text_file)
                          ? std::string()
                          : sha256_file(src.text_file));
  attr("n_seq", int64_t(opt.n_seq));
  attr("seq_len", int64_t(opt.seq_len));
  attr("dtype", std::string(opt.dtype == DType::F16 ? "f16" : "f32"));
  attr("gzip", int64_t(opt.gzip));
  if (!shards.empty()) {
    nlohmann::json list = nlohmann::json::array();
    for (const DumpShard& sh : shards)
      list.push_back({{"file", sh.file}, {"first_seq", sh.first}, {"n_seq", sh.count}});
    attr("shards", list.dump());
  }
  attr("sequence_rule",
       std::string("consecutive windows of the token stream ([BOS] + encode(doc) per document); "
                   "each sequence starts with BOS"));
}

// /vocab: token id -> the tokenizer's spelling.
void write_vocab(hid_t file, const std::vector<std::string>& vocab, const std::string& w) {
  h5::write_strings(file, "vocab", vocab, w);
  Handle v(h5::check(H5Dopen2(file, "vocab", H5P_DEFAULT), w, "vocab"), H5Dclose);
  h5::write_attr(v, "description",
                 std::string("token id -> the tokenizer's own spelling of that token (Hugging "
                             "Face convert_ids_to_tokens), e.g. '\u2581the', '<0x0A>'; bytes "
                             "that are not UTF-8 are written as \\xNN"),
                 w);
}

}  // namespace

// Creates the [N, row...] datasets of one dump: contiguous unless compressed or a chunk
// shape was asked for, virtual over the shards when there are shards.
struct DumpDatasetMaker {
  const DumpOptions& opt;
  const std::vector<DumpShard>& shards;
  const std::string& w;
  const int N = opt.n_seq;
  const bool contiguous = opt.gzip == 0 && opt.chunk_seqs == 0 && opt.chunk_heads == 0;
  const int chunk_seqs = std::min(std::max(1, opt.chunk_seqs), N);

  // Rows per write: ~256 KB for contiguous data; a whole row of chunks for chunked data,
  // so every write covers complete chunks and no chunk cache is needed.
  int batch_for(size_t row_bytes, bool chunked) const {
    if (chunked) return chunk_seqs;
    return int(std::clamp<size_t>(kBatchBytes / row_bytes, 1, size_t(std::min(N, kBatchRows))));
  }

  // Creates a [N, row...] dataset; `chunk_row` empty = contiguous. `in_file`: its path in
  // the file (the shards hold a dataset at the same path).
  RowBatch make(hid_t loc, const std::string& name, const std::string& in_file,
                std::vector<hsize_t> row, std::vector<hsize_t> chunk_row, hid_t type, hid_t mem,
                size_t elem, const std::string& axes) const {
    std::vector<hsize_t> shape{hsize_t(N)};
    shape.insert(shape.end(), row.begin(), row.end());
    Handle dcpl(h5::check(H5Pcreate(H5P_DATASET_CREATE), w, "H5Pcreate"), H5Pclose);
    // No object timestamps: they cost a metadata update on writes and make otherwise
    // identical files differ.
    h5::check_status(H5Pset_obj_track_times(dcpl, false), w, "H5Pset_obj_track_times");
    if (!shards.empty()) {
      add_virtual_mappings(dcpl, shape, shards, in_file, type, w);
      chunk_row.clear();
    }
    const bool chunked = !chunk_row.empty();
    if (chunked) {
      std::vector<hsize_t> chunk{hsize_t(chunk_seqs)};
      chunk.insert(chunk.end(), chunk_row.begin(), chunk_row.end());
      h5::check_status(H5Pset_chunk(dcpl, int(chunk.size()), chunk.data()), w, "H5Pset_chunk");
      if (opt.gzip > 0) {
        h5::check_status(H5Pset_shuffle(dcpl), w, "H5Pset_shuffle");
        h5::check_status(H5Pset_deflate(dcpl, unsigned(opt.gzip)), w, "H5Pset_deflate");
      }
    }
    Handle dapl(h5::check(H5Pcreate(H5P_DATASET_ACCESS), w, "H5Pcreate"), H5Pclose);
    h5::check_status(H5Pset_chunk_cache(dapl, 0, 0, 1.0), w, "H5Pset_chunk_cache");
    Handle space(h5::check(H5Screate_simple(int(shape.size()), shape.data(), nullptr), w,
                           "H5Screate_simple"),
                 H5Sclose);
    Handle d(h5::check(H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, dcpl, dapl), w,
                       ("creating dataset " + name).c_str()),
             H5Dclose);
    h5::write_attr(d, "axes", axes, w);
    size_t row_bytes = elem;
    for (hsize_t x : row) row_bytes *= x;
    return RowBatch(std::move(d), mem, row, row_bytes, batch_for(row_bytes, chunked), w);
  }

  // A float dataset [N, row...], chunked by whole rows unless contiguous.
  RowBatch make_float(hid_t loc, const std::string& name, const std::string& in_file,
                      std::vector<hsize_t> row, std::vector<hsize_t> chunk_row,
                      const std::string& axes) const {
    const hid_t ftype = opt.dtype == DType::F16 ? h5::f16_type() : H5T_IEEE_F32LE;
    const hid_t mtype = opt.dtype == DType::F16 ? h5::f16_type() : H5T_NATIVE_FLOAT;
    if (contiguous) chunk_row.clear();
    return make(loc, name, in_file, std::move(row), std::move(chunk_row), ftype, mtype,
                dtype_size(opt.dtype), axes);
  }
};

DumpFile::DumpFile(const fs::path& path, const ModelConfig& c, const DumpOptions& opt,
                   const DumpSource& src, int32_t bos, const std::vector<std::string>& vocab,
                   const std::vector<DumpShard>& shards)
    : where_(path.string()),
      opt_(opt),
      T_(opt.seq_len),
      hd_(c.head_dim),
      vocab_(c.vocab_size),
      text_name_(src.text_file.string()) {
  const std::string& w = where_;
  file_ = create_dump_file(path, w);
  write_root_attrs(file_, w, c, opt, src, bos, shards);
  const DumpDatasetMaker maker{opt, shards, w};
  tokens_ = maker.make(file_, "tokens", "tokens", {hsize_t(T_)}, {}, H5T_STD_I32LE,
                       H5T_NATIVE_INT32, 4, "sequence,position");
  make_sources(maker);
  write_vocab(file_, vocab, w);
  if (opt.logits)
    logits_ = maker.make_float(file_, "logits", "logits", {hsize_t(T_), hsize_t(vocab_)},
                               {hsize_t(T_), hsize_t(vocab_)}, "sequence,position,vocab");
  make_layers(maker, c);
}

// /sources rows: token_offset, document, file (fixed-length string).
void DumpFile::make_sources(const DumpDatasetMaker& maker) {
  const std::string& w = where_;
  const size_t name_len = std::max<size_t>(1, text_name_.size());
  source_type_ =
      Handle(h5::check(H5Tcreate(H5T_COMPOUND, 16 + name_len), w, "H5Tcreate"), H5Tclose);
  Handle str(h5::check(H5Tcopy(H5T_C_S1), w, "H5Tcopy"), H5Tclose);
  H5Tset_size(str, name_len);
  H5Tinsert(source_type_, "token_offset", 0, H5T_NATIVE_INT64);
  H5Tinsert(source_type_, "document", 8, H5T_NATIVE_INT64);
  H5Tinsert(source_type_, "file", 16, str);
  source_row_.assign(16 + name_len, 0);
  sources_ = maker.make(file_, "sources", "sources", {}, {}, source_type_, source_type_,
                        16 + name_len, "sequence");
  h5::write_attr(sources_.id(), "description",
                 std::string("token_offset: index in the token stream of the sequence's first "
                             "text token (the one after its BOS); document: index of the "
                             "document that token is in"),
                 w);
}

// /layer_NN/<tensor>: [N, heads, seq_len, head_dim] per layer and tensor.
void DumpFile::make_layers(const DumpDatasetMaker& maker, const ModelConfig& c) {
  const std::string& w = where_;
  for (const std::string& t : opt_.tensors)
    heads_.push_back(t == "q" || t == "attn_out" ? c.n_heads : c.n_kv_heads);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string g = fmt::format("layer_{:02d}", l);
    groups_.emplace_back(
        h5::check(H5Gcreate2(file_, g.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), w,
                  "creating a layer group"),
        H5Gclose);
    for (size_t i = 0; i < opt_.tensors.size(); ++i) {
      const std::string& t = opt_.tensors[i];
      const hsize_t heads = hsize_t(heads_[i]);
      const hsize_t chunk_heads = std::min<hsize_t>(std::max(1, opt_.chunk_heads), heads);
      const bool qside = t == "q" || t == "attn_out";
      per_head_.push_back(maker.make_float(
          groups_.back(), t, g + "/" + t, {heads, hsize_t(T_), hsize_t(hd_)},
          {chunk_heads, hsize_t(T_), hsize_t(hd_)},
          qside ? "sequence,head,position,head_dim" : "sequence,kv_head,position,head_dim"));
      const char* what = t == "k_pre_rope" ? "keys before RoPE"
                         : t == "k"        ? "keys after RoPE (as cached)"
                         : t == "v"        ? "values"
                         : t == "q"        ? "queries after RoPE"
                                           : "per-head attention output, before W_O";
      h5::write_attr(per_head_.back().id(), "description", std::string(what), w);
    }
  }
}

DumpFile::~DumpFile() = default;

void DumpFile::stage_tensor(int layer, size_t t, int seq, const float* data) {
  RowBatch& b = per_head_[size_t(layer) * opt_.tensors.size() + t];
  const size_t n = size_t(heads_[t]) * T_ * hd_;
  if (opt_.dtype == DType::F16) {
    half_.resize(n);
    for (size_t i = 0; i < n; ++i) half_[i] = f32_to_f16(data[i]);
    b.stage(seq, half_.data());
  } else {
    b.stage(seq, data);
  }
  tensor_bytes_ += int64_t(n * dtype_size(opt_.dtype));
}

void DumpFile::stage_tokens(int seq, const int32_t* ids) {
  tokens_.stage(seq, ids);
}

float* DumpFile::tensor_slot(int layer, size_t t, int seq, size_t n) {
  if (opt_.dtype != DType::F32) return nullptr;
  KV_ASSERT(n == size_t(heads_[t]) * T_ * hd_);
  return static_cast<float*>(per_head_[size_t(layer) * opt_.tensors.size() + t].slot(seq));
}

void DumpFile::commit_tensor(int layer, size_t t, int seq) {
  per_head_[size_t(layer) * opt_.tensors.size() + t].commit(seq);
  tensor_bytes_ += int64_t(size_t(heads_[t]) * T_ * hd_ * 4);
}

void DumpFile::stage_source(int seq, int64_t token_offset, int64_t document) {
  std::memcpy(source_row_.data(), &token_offset, 8);
  std::memcpy(source_row_.data() + 8, &document, 8);
  std::memcpy(source_row_.data() + 16, text_name_.data(), text_name_.size());
  sources_.stage(seq, source_row_.data());
}

void DumpFile::stage_logits(int seq, const float* logits) {
  const size_t n = size_t(T_) * vocab_;
  if (opt_.dtype == DType::F16) {
    half_.resize(n);
    for (size_t i = 0; i < n; ++i) half_[i] = f32_to_f16(logits[i]);
    logits_.stage(seq, half_.data());
  } else {
    logits_.stage(seq, logits);
  }
  tensor_bytes_ += int64_t(n * dtype_size(opt_.dtype));
}

void DumpFile::finish() {
  for (RowBatch& b : per_head_) b.flush();
  tokens_.flush();
  sources_.flush();
  if (opt_.logits) logits_.flush();
  h5::check_status(H5Fflush(file_, H5F_SCOPE_GLOBAL), where_, "flushing the file");
}

}  // namespace kvscope
