// Reads K/V dumps (docs/hdf5-schema.md) by layer, head and block of sequences; never
// more than one block is in memory.
#include <algorithm>
#include <cstring>
#include <set>

#include "kvscope/io/error.hpp"
#include "kvscope/io/hdf5_util.hpp"
#include "kvscope/kv/kv_dump.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using h5::Handle;

int DumpInfo::heads_of(const std::string& tensor) const {
  return tensor == "q" || tensor == "attn_out" ? config.n_heads : config.n_kv_heads;
}

struct KVDumpReader::Impl {
  std::string where;
  Handle file;
  DumpInfo info;
  // [layer][tensor index in dump_tensor_names()] -> open dataset (invalid when absent)
  std::vector<std::vector<Handle>> datasets;

  const Handle& dataset(int layer, const std::string& tensor) const {
    KV_CHECK(layer >= 0 && layer < info.config.n_layers, "{}: layer {} out of range [0, {})", where,
             layer, info.config.n_layers);
    const auto& names = dump_tensor_names();
    const size_t i = size_t(std::find(names.begin(), names.end(), tensor) - names.begin());
    KV_CHECK(i < names.size() && datasets[size_t(layer)][i].valid(),
             "{}: the dump has no tensor '{}'", where, tensor);
    return datasets[size_t(layer)][i];
  }
};

namespace {

// A dump written by several MPI ranks maps its datasets onto shard files beside it; HDF5
// reads a missing shard as fill values without complaint, so every shard must be there.
void check_virtual_sources(hid_t ds, const fs::path& path, const std::string& name,
                           std::set<std::string>& checked) {
  Handle dcpl(h5::check(H5Dget_create_plist(ds), path.string(), "H5Dget_create_plist"), H5Pclose);
  if (H5Pget_layout(dcpl) != H5D_VIRTUAL) return;
  size_t n = 0;
  h5::check_status(H5Pget_virtual_count(dcpl, &n), path.string(), "H5Pget_virtual_count");
  for (size_t i = 0; i < n; ++i) {
    const ssize_t len = H5Pget_virtual_filename(dcpl, i, nullptr, 0);
    KV_CHECK(len >= 0, "{}: dataset {}: cannot read its shard file names", path.string(), name);
    std::string file(size_t(len) + 1, '\0');
    H5Pget_virtual_filename(dcpl, i, file.data(), file.size());
    file.resize(size_t(len));
    if (!checked.insert(file).second) continue;
    const fs::path p = fs::path(file).is_absolute() ? fs::path(file) : path.parent_path() / file;
    KV_CHECK(fs::is_regular_file(p),
             "{}: dataset {} maps sequences to shard file {}, which is missing (a dump written "
             "by several MPI ranks keeps its shard files beside it)",
             path.string(), name, p.string());
  }
}

}  // namespace

KVDumpReader::KVDumpReader(const fs::path& path) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.where = path.string();
  KV_CHECK(fs::is_regular_file(path), "{}: no such dump file", d.where);
  h5::init();
  KV_CHECK(H5Fis_hdf5(path.c_str()) > 0, "{}: not an HDF5 file", d.where);
  d.file = Handle(h5::check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), d.where, "opening"),
                  H5Fclose);
  DumpInfo& in = d.info;
  ModelConfig& c = in.config;
  std::set<std::string> shards_checked;
  auto geti = [&](const char* n) { return int(h5::read_attr_int(d.file, n, d.where)); };
  in.n_seq = geti("n_seq");
  in.seq_len = geti("seq_len");
  c.n_layers = geti("n_layers");
  c.n_heads = geti("n_heads");
  c.n_kv_heads = geti("n_kv_heads");
  c.head_dim = geti("head_dim");
  c.dim = geti("dim");
  c.hidden_dim = geti("hidden_dim");
  c.vocab_size = geti("vocab_size");
  c.max_seq_len = geti("max_seq_len");
  c.rope_theta = float(h5::read_attr_double(d.file, "rope_theta", d.where));
  c.norm_eps = float(h5::read_attr_double(d.file, "norm_eps", d.where));
  const std::string layout = h5::read_attr_string(d.file, "rope_layout", d.where);
  KV_CHECK(layout == "adjacent_pairs" || layout == "rotate_half",
           "{}: attribute rope_layout is '{}', expected adjacent_pairs or rotate_half", d.where,
           layout);
  c.rope_layout = layout == "adjacent_pairs" ? RopeLayout::kAdjacentPairs : RopeLayout::kRotateHalf;
  const std::string pos = h5::read_attr_string(d.file, "positional", d.where);
  c.positional = pos == "alibi"  ? PositionalKind::kAlibi
                 : pos == "none" ? PositionalKind::kNone
                                 : PositionalKind::kRope;
  in.model_name = h5::read_attr_string(d.file, "model_name", d.where);
  in.model_sha256 = h5::read_attr_string(d.file, "model_sha256", d.where);
  in.tokenizer_kind = h5::read_attr_string(d.file, "tokenizer_kind", d.where);
  in.text_file = h5::read_attr_string(d.file, "text_file", d.where);
  in.text_sha256 = h5::read_attr_string(d.file, "text_sha256", d.where);
  in.dtype = h5::read_attr_string(d.file, "dtype", d.where);
  KV_CHECK(in.n_seq > 0 && in.seq_len > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0 &&
               c.head_dim > 0,
           "{}: root attributes give an empty or invalid shape (n_seq {}, seq_len {}, layers {}, "
           "heads {}/{}, head_dim {})",
           d.where, in.n_seq, in.seq_len, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim);

  auto expect_dims = [&](hid_t ds, const std::vector<hsize_t>& want, const std::string& name) {
    const std::vector<hsize_t> got = h5::dims(ds, d.where);
    auto str = [](const std::vector<hsize_t>& v) {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    };
    KV_CHECK(got == want, "{}: dataset {} has shape {}, expected {}", d.where, name, str(got),
             str(want));
  };
  {
    Handle tok(h5::check(H5Dopen2(d.file, "tokens", H5P_DEFAULT), d.where, "opening /tokens"),
               H5Dclose);
    expect_dims(tok, {hsize_t(in.n_seq), hsize_t(in.seq_len)}, "/tokens");
    check_virtual_sources(tok, path, "/tokens", shards_checked);
  }
  in.logits = H5Lexists(d.file, "logits", H5P_DEFAULT) > 0;
  const auto& names = dump_tensor_names();
  std::set<std::string> present;
  d.datasets.resize(size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string g = fmt::format("layer_{:02d}", l);
    KV_CHECK(H5Lexists(d.file, g.c_str(), H5P_DEFAULT) > 0, "{}: group /{} is missing", d.where, g);
    for (const std::string& t : names) {
      const std::string p = g + "/" + t;
      if (H5Lexists(d.file, p.c_str(), H5P_DEFAULT) <= 0) {
        d.datasets[size_t(l)].emplace_back();
        continue;
      }
      Handle ds(h5::check(H5Dopen2(d.file, p.c_str(), H5P_DEFAULT), d.where, p.c_str()), H5Dclose);
      expect_dims(
          ds,
          {hsize_t(in.n_seq), hsize_t(in.heads_of(t)), hsize_t(in.seq_len), hsize_t(c.head_dim)},
          "/" + p);
      check_virtual_sources(ds, path, "/" + p, shards_checked);
      present.insert(t);
      d.datasets[size_t(l)].push_back(std::move(ds));
    }
  }
  for (const std::string& t : names)
    if (present.count(t)) {
      for (int l = 0; l < c.n_layers; ++l)
        KV_CHECK(d.datasets[size_t(l)][size_t(&t - names.data())].valid(),
                 "{}: tensor '{}' is missing from layer {}", d.where, t, l);
      in.tensors.push_back(t);
    }
}

KVDumpReader::~KVDumpReader() = default;
KVDumpReader::KVDumpReader(KVDumpReader&&) noexcept = default;
KVDumpReader& KVDumpReader::operator=(KVDumpReader&&) noexcept = default;

const DumpInfo& KVDumpReader::info() const {
  return impl_->info;
}

bool KVDumpReader::has(const std::string& tensor) const {
  for (const std::string& t : impl_->info.tensors)
    if (t == tensor) return true;
  return false;
}

void KVDumpReader::read_head(int layer, const std::string& tensor, int head, int seq0, int n,
                             float* out) const {
  const Impl& d = *impl_;
  const Handle& ds = d.dataset(layer, tensor);
  const DumpInfo& in = d.info;
  KV_CHECK(head >= 0 && head < in.heads_of(tensor), "{}: head {} of '{}' out of range [0, {})",
           d.where, head, tensor, in.heads_of(tensor));
  KV_CHECK(seq0 >= 0 && n >= 0 && seq0 + n <= in.n_seq,
           "{}: sequences [{}, {}) out of range [0, {})", d.where, seq0, seq0 + n, in.n_seq);
  if (n == 0) return;
  const hsize_t start[4] = {hsize_t(seq0), hsize_t(head), 0, 0};
  const hsize_t count[4] = {hsize_t(n), 1, hsize_t(in.seq_len), hsize_t(in.config.head_dim)};
  Handle fspace(h5::check(H5Dget_space(ds), d.where, "H5Dget_space"), H5Sclose);
  h5::check_status(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, count, nullptr),
                   d.where, "selecting a head");
  Handle mspace(h5::check(H5Screate_simple(4, count, nullptr), d.where, "H5Screate_simple"),
                H5Sclose);
  // HDF5 converts f16 files to float on the way in.
  h5::check_status(H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, out), d.where,
                   ("reading " + tensor).c_str());
}

void KVDumpReader::for_each_block(int layer, const std::string& tensor, int head, int block,
                                  const std::function<void(int, int, const float*)>& fn) const {
  const DumpInfo& in = impl_->info;
  KV_CHECK(block >= 1, "{}: block must be >= 1, got {}", impl_->where, block);
  std::vector<float> buf(size_t(std::min(block, in.n_seq)) * in.seq_len * in.config.head_dim);
  for (int s0 = 0; s0 < in.n_seq; s0 += block) {
    const int n = std::min(block, in.n_seq - s0);
    read_head(layer, tensor, head, s0, n, buf.data());
    fn(s0, n, buf.data());
  }
}

std::vector<int32_t> KVDumpReader::tokens(int seq0, int n) const {
  const Impl& d = *impl_;
  const DumpInfo& in = d.info;
  KV_CHECK(seq0 >= 0 && n >= 0 && seq0 + n <= in.n_seq,
           "{}: sequences [{}, {}) out of range [0, {})", d.where, seq0, seq0 + n, in.n_seq);
  std::vector<int32_t> out(size_t(n) * in.seq_len);
  if (n == 0) return out;
  Handle ds(h5::check(H5Dopen2(d.file, "tokens", H5P_DEFAULT), d.where, "opening /tokens"),
            H5Dclose);
  const hsize_t start[2] = {hsize_t(seq0), 0}, count[2] = {hsize_t(n), hsize_t(in.seq_len)};
  Handle fspace(h5::check(H5Dget_space(ds), d.where, "H5Dget_space"), H5Sclose);
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, count, nullptr);
  Handle mspace(h5::check(H5Screate_simple(2, count, nullptr), d.where, "H5Screate_simple"),
                H5Sclose);
  h5::check_status(H5Dread(ds, H5T_NATIVE_INT32, mspace, fspace, H5P_DEFAULT, out.data()), d.where,
                   "reading /tokens");
  return out;
}

std::vector<float> KVDumpReader::logits(int seq) const {
  const Impl& d = *impl_;
  const DumpInfo& in = d.info;
  KV_CHECK(in.logits, "{}: the dump has no /logits", d.where);
  KV_CHECK(seq >= 0 && seq < in.n_seq, "{}: sequence {} out of range [0, {})", d.where, seq,
           in.n_seq);
  const int V = in.config.vocab_size;
  std::vector<float> out(size_t(in.seq_len) * V);
  Handle ds(h5::check(H5Dopen2(d.file, "logits", H5P_DEFAULT), d.where, "opening /logits"),
            H5Dclose);
  const hsize_t start[3] = {hsize_t(seq), 0, 0};
  const hsize_t count[3] = {1, hsize_t(in.seq_len), hsize_t(V)};
  Handle fspace(h5::check(H5Dget_space(ds), d.where, "H5Dget_space"), H5Sclose);
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, count, nullptr);
  Handle mspace(h5::check(H5Screate_simple(3, count, nullptr), d.where, "H5Screate_simple"),
                H5Sclose);
  h5::check_status(H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, out.data()), d.where,
                   "reading /logits");
  return out;
}

std::vector<KVDumpReader::Source> KVDumpReader::sources() const {
  const Impl& d = *impl_;
  Handle ds(h5::check(H5Dopen2(d.file, "sources", H5P_DEFAULT), d.where, "opening /sources"),
            H5Dclose);
  Handle ft(h5::check(H5Dget_type(ds), d.where, "H5Dget_type"), H5Tclose);
  const size_t row = H5Tget_size(ft);
  KV_CHECK(row > 16, "{}: /sources has an unexpected type", d.where);
  std::vector<char> buf(row * size_t(d.info.n_seq));
  h5::check_status(H5Dread(ds, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), d.where,
                   "reading /sources");
  std::vector<Source> out;
  for (int i = 0; i < d.info.n_seq; ++i) {
    const char* r = buf.data() + size_t(i) * row;
    Source s;
    std::memcpy(&s.token_offset, r, 8);
    std::memcpy(&s.document, r + 8, 8);
    s.file.assign(r + 16, strnlen(r + 16, row - 16));
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> KVDumpReader::vocab() const {
  const Impl& d = *impl_;
  if (H5Lexists(d.file, "vocab", H5P_DEFAULT) <= 0) return {};
  return h5::read_strings(d.file, "vocab", d.where);
}

}  // namespace kvscope
