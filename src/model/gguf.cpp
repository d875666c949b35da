// GGUF reader: a bounds-checked cursor over the mapped file, metadata into JSON, tensor
// infos into Tensor views of the data section.
#include "kvscope/model/gguf.hpp"

#include <cstring>
#include <limits>

#include "kvscope/io/checked.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/mapped_file.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kMaxArrayDepth = 8;

// Reads little-endian values and never past `end`; failures name the file and `what`.
struct Cursor {
  const std::byte* p;
  const std::byte* begin;
  const std::byte* end;
  std::string src;

  uint64_t at() const { return uint64_t(p - begin); }
  void need(uint64_t n, const std::string& what) const {
    KV_CHECK(n <= uint64_t(end - p),
             "{}: {} needs {} bytes at offset {}, but the file has only {} left (truncated or "
             "a lying length)",
             src, what, n, at(), uint64_t(end - p));
  }
  template <class T>
  T get(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p, sizeof(T));
    p += sizeof(T);
    return v;
  }
  std::string str(const std::string& what) {
    const uint64_t n = get<uint64_t>(what + " (string length)");
    need(n, what);
    std::string s(reinterpret_cast<const char*>(p), size_t(n));
    p += n;
    return s;
  }
};

const char* kValueTypeNames[] = {"u8",   "i8",  "u16", "i16", "u32", "i32", "f32",
                                 "bool", "str", "arr", "u64", "i64", "f64"};
// Bytes of a scalar value type (strings and arrays: their smallest encoding).
uint64_t min_bytes(uint32_t t) {
  static const uint64_t b[] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};
  return b[t];
}

json read_value(Cursor& c, uint32_t type, const std::string& key, int depth, std::string* tname) {
  KV_CHECK(type <= 12, "{}: metadata '{}' has value type {}, not one of GGUF's 0..12", c.src, key,
           type);
  if (tname) *tname = kValueTypeNames[type];
  switch (type) {
    case 0:
      return c.get<uint8_t>(key);
    case 1:
      return c.get<int8_t>(key);
    case 2:
      return c.get<uint16_t>(key);
    case 3:
      return c.get<int16_t>(key);
    case 4:
      return c.get<uint32_t>(key);
    case 5:
      return c.get<int32_t>(key);
    case 6:
      return c.get<float>(key);
    case 7: {
      const uint8_t b = c.get<uint8_t>(key);
      KV_CHECK(b <= 1, "{}: metadata '{}' is a bool holding {} (expected 0 or 1)", c.src, key, b);
      return b == 1;
    }
    case 8:
      return c.str(key);
    case 9: {
      KV_CHECK(depth < kMaxArrayDepth, "{}: metadata '{}' nests arrays deeper than {}", c.src, key,
               kMaxArrayDepth);
      const uint32_t et = c.get<uint32_t>(key + " (array type)");
      KV_CHECK(et <= 12, "{}: metadata '{}' is an array of value type {}, not one of 0..12", c.src,
               key, et);
      const uint64_t n = c.get<uint64_t>(key + " (array length)");
      // Each element takes at least min_bytes: a count the file cannot hold is a lie.
      KV_CHECK(n <= uint64_t(c.end - c.p) / min_bytes(et),
               "{}: metadata '{}' claims {} elements of {} at offset {}, more than the {} bytes "
               "left can hold",
               c.src, key, n, kValueTypeNames[et], c.at(), uint64_t(c.end - c.p));
      json a = json::array();
      std::string inner;
      for (uint64_t i = 0; i < n; ++i) a.push_back(read_value(c, et, key, depth + 1, &inner));
      if (tname) *tname = std::string("arr[") + kValueTypeNames[et] + "]";
      return a;
    }
    case 10:
      return c.get<uint64_t>(key);
    case 11:
      return c.get<int64_t>(key);
    case 12:
      return c.get<double>(key);
  }
  return nullptr;
}

}  // namespace

std::string ggml_type_name(uint32_t t) {
  static const char* names[] = {
      "F32",   "F16",        "Q4_0",       "Q4_1",       "Q4_2",     "Q4_3",     "Q5_0",
      "Q5_1",  "Q8_0",       "Q8_1",       "Q2_K",       "Q3_K",     "Q4_K",     "Q5_K",
      "Q6_K",  "Q8_K",       "IQ2_XXS",    "IQ2_XS",     "IQ3_XXS",  "IQ1_S",    "IQ4_NL",
      "IQ3_S", "IQ2_S",      "IQ4_XS",     "I8",         "I16",      "I32",      "I64",
      "F64",   "IQ1_M",      "BF16",       "Q4_0_4_4",   "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",
      "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};
  if (t < sizeof(names) / sizeof(names[0])) return names[t];
  return "type " + std::to_string(t);
}

DType dtype_from_ggml(uint32_t t, const std::string& where) {
  switch (t) {
    case 0:
      return DType::F32;
    case 1:
      return DType::F16;
    case 2:
      return DType::Q4_0;
    case 3:
      return DType::Q4_1;
    case 6:
      return DType::Q5_0;
    case 7:
      return DType::Q5_1;
    case 8:
      return DType::Q8_0;
    case 10:
      return DType::Q2_K;
    case 11:
      return DType::Q3_K;
    case 12:
      return DType::Q4_K;
    case 13:
      return DType::Q5_K;
    case 14:
      return DType::Q6_K;
    case 20:
      return DType::IQ4_NL;
    case 30:
      return DType::BF16;
  }
  throw Error(
      fmt::format("{}: tensor type {} is not supported (supported: F32, F16, BF16, Q8_0, "
                  "Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL)",
                  where, ggml_type_name(t)));
}

const GgufTensor* GgufFile::find(const std::string& name) const {
  auto it = index.find(name);
  return it == index.end() ? nullptr : &tensors[it->second];
}

GgufFile open_gguf(const fs::path& path) {
  GgufFile g;
  g.path = path;
  g.file = MappedFile::open(path);
  Cursor c{g.file->data(), g.file->data(), g.file->data() + g.file->size(), path.string()};
  const uint32_t magic = c.get<uint32_t>("the magic");
  KV_CHECK(magic == 0x46554747u, "{}: not a GGUF file (magic {:#010x}, expected 'GGUF')", c.src,
           magic);
  g.version = c.get<uint32_t>("the version");
  KV_CHECK(g.version == 2 || g.version == 3,
           "{}: GGUF version {} is not supported (expected 2 or 3)", c.src, g.version);
  const uint64_t n_tensors = c.get<uint64_t>("the tensor count");
  const uint64_t n_kv = c.get<uint64_t>("the metadata count");
  // A key takes at least 8 + 4 + 1 bytes and a tensor info 8 + 4 + 8 + 4 + 8.
  KV_CHECK(n_kv <= uint64_t(c.end - c.p) / 13 && n_tensors <= uint64_t(c.end - c.p) / 32,
           "{}: header claims {} metadata entries and {} tensors, more than the file's {} bytes "
           "can hold",
           c.src, n_kv, n_tensors, g.file->size());
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = c.str(fmt::format("metadata key {}", i));
    KV_CHECK(!g.metadata.contains(key), "{}: metadata key '{}' appears twice", c.src, key);
    const uint32_t type = c.get<uint32_t>(key + " (value type)");
    std::string tname;
    g.metadata[key] = read_value(c, type, key, 0, &tname);
    g.metadata_type[key] = tname;
  }
  if (g.metadata.contains("general.alignment")) {
    const json& a = g.metadata["general.alignment"];
    KV_CHECK(a.is_number_unsigned() && g.metadata_type["general.alignment"] == "u32" &&
                 a.get<uint64_t>() > 0 && a.get<uint64_t>() % 8 == 0 &&
                 a.get<uint64_t>() <= (1u << 20),
             "{}: general.alignment must be a u32 multiple of 8 (up to 2^20), got {} ({})", c.src,
             a.dump(), g.metadata_type["general.alignment"]);
    g.alignment = a.get<uint64_t>();
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = c.str(fmt::format("tensor info {} name", i));
    const std::string where = fmt::format("{}: tensor '{}'", c.src, t.name);
    KV_CHECK(!g.index.count(t.name), "{} appears twice", where);
    const uint32_t nd = c.get<uint32_t>(t.name + " (dimension count)");
    KV_CHECK(nd >= 1 && nd <= 4, "{} has {} dimensions (expected 1 to 4)", where, nd);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t n = c.get<uint64_t>(t.name + " (dimension)");
      KV_CHECK(n >= 1 && n <= (uint64_t(1) << 40) && numel <= (uint64_t(1) << 40) / n,
               "{} has dimension {} = {}: empty or more elements than any tensor can", where, d, n);
      numel *= n;
      t.dims.push_back(int64_t(n));
    }
    t.ggml_type = c.get<uint32_t>(t.name + " (type)");
    t.offset = c.get<uint64_t>(t.name + " (offset)");
    const DType dt = dtype_from_ggml(t.ggml_type, where);
    KV_CHECK(t.dims[0] % dtype_block(dt) == 0,
             "{}: rows of {} elements are not whole {} blocks of {}", where, t.dims[0],
             dtype_name(dt), dtype_block(dt));
    KV_CHECK(t.offset % g.alignment == 0,
             "{}: data offset {} is not a multiple of the alignment {}", where, t.offset,
             g.alignment);
    t.tensor.name = t.name;
    t.tensor.dtype = dt;
    t.tensor.cols = t.dims[0];
    t.tensor.rows = int64_t(numel) / t.dims[0];
    g.index[t.name] = g.tensors.size();
    g.tensors.push_back(std::move(t));
  }
  const uint64_t data_start = (c.at() + g.alignment - 1) / g.alignment * g.alignment;
  const uint64_t data_size = g.file->size() >= data_start ? g.file->size() - data_start : 0;
  std::vector<ByteSpan> spans;
  for (GgufTensor& t : g.tensors) {
    const uint64_t bytes = t.tensor.bytes();
    KV_CHECK(t.offset <= data_size && bytes <= data_size - t.offset,
             "{}: tensor '{}' ({} x {} {}, {} bytes at data offset {}) overruns the data section "
             "of {} bytes (truncated file?)",
             c.src, t.name, t.tensor.rows, t.tensor.cols, dtype_name(t.tensor.dtype), bytes,
             t.offset, data_size);
    t.tensor.data = g.file->data() + data_start + t.offset;
    t.tensor.owner = g.file;
    t.tensor.file = g.file;
    spans.push_back({t.offset, t.offset + bytes, t.name});
  }
  if (const auto o = first_overlap(std::move(spans)))
    throw Error(
        fmt::format("{}: tensors '{}' (data offset {}, {} bytes) and '{}' (offset {}, {} "
                    "bytes) share bytes; each tensor needs its own",
                    c.src, o->first.name, o->first.begin, o->first.end - o->first.begin,
                    o->second.name, o->second.begin, o->second.end - o->second.begin));
  return g;
}

}  // namespace kvscope
