#include "kvscope/model/safetensors.hpp"

#include <cstring>
#include <nlohmann/json.hpp>

#include "kvscope/io/atomic_file.hpp"
#include "kvscope/io/checked.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/json_util.hpp"
#include "kvscope/io/mapped_file.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

DType parse_dtype(const std::string& s, const std::string& where) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  throw Error(fmt::format("{}: dtype '{}' is not supported (expected F32, F16 or BF16)", where, s));
}

}  // namespace

SafetensorsFile open_safetensors(const fs::path& path) {
  SafetensorsFile out;
  out.path = path;
  out.file = MappedFile::open(path);
  const std::string src = path.string();
  const size_t size = out.file->size();
  KV_CHECK(size >= 8, "{}: {} bytes is too short for a safetensors header length", src, size);
  uint64_t n = 0;
  std::memcpy(&n, out.file->data(), 8);
  KV_CHECK(n <= size - 8, "{}: header length {} overruns the file ({} bytes after the length)", src,
           n, size - 8);
  const char* hdr = reinterpret_cast<const char*>(out.file->data() + 8);
  const json j = parse_json(std::string_view(hdr, size_t(n)), src + ": safetensors header");
  KV_CHECK(j.is_object(), "{}: safetensors header must be a JSON object", src);
  const size_t data_begin = 8 + size_t(n);
  const size_t data_size = size - data_begin;
  std::vector<ByteSpan> spans;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it.value().is_object())
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          if (m.value().is_string()) out.metadata[m.key()] = m.value().get<std::string>();
      continue;
    }
    const std::string where = fmt::format("{}: tensor '{}'", src, it.key());
    const json& e = it.value();
    KV_CHECK(
        e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
        "{}: entry must have dtype, shape and data_offsets", where);
    KV_CHECK(e["dtype"].is_string(), "{}: dtype must be a string", where);
    SafetensorsEntry t;
    t.name = it.key();
    t.dtype = parse_dtype(e["dtype"].get<std::string>(), where);
    KV_CHECK(e["shape"].is_array(), "{}: shape must be an array", where);
    // Each multiplication checked: a shape whose product wraps around 2^64 could otherwise
    // match the byte span of data_offsets and load as a different shape.
    uint64_t numel = 1;
    for (const json& d : e["shape"]) {
      KV_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
               "{}: shape entry {} is not a valid dimension", where, json_brief(d));
      const uint64_t dim = d.get<uint64_t>();
      const auto prod = checked_mul(numel, dim);
      KV_CHECK(dim <= (uint64_t(1) << 40) && prod && *prod <= (uint64_t(1) << 40),
               "{}: shape {} has more elements than any tensor can (over 2^40)", where,
               json_brief(e["shape"]));
      t.shape.push_back(int64_t(dim));
      numel = *prod;
    }
    const json& off = e["data_offsets"];
    KV_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                 off[1].is_number_unsigned(),
             "{}: data_offsets must be two non-negative integers, got {}", where, json_brief(off));
    const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    KV_CHECK(b <= en && en <= data_size,
             "{}: data_offsets [{}, {}] overrun the data section of {} bytes", where, b, en,
             data_size);
    const uint64_t want = numel * dtype_size(t.dtype);  // < 2^43: no overflow
    KV_CHECK(en - b == want, "{}: shape {} of {} needs {} bytes, data_offsets span {}", where,
             json_brief(e["shape"]), dtype_name(t.dtype), want, en - b);
    t.tensor.name = t.name;
    t.tensor.dtype = t.dtype;
    t.tensor.cols = t.shape.empty() ? 1 : t.shape.back();
    t.tensor.rows = t.tensor.cols == 0 ? 0 : int64_t(numel) / t.tensor.cols;
    t.tensor.data = out.file->data() + data_begin + b;
    t.tensor.owner = out.file;
    t.tensor.file = out.file;
    spans.push_back({b, en, t.name});
    out.tensors.emplace(t.name, std::move(t));
  }
  if (const auto o = first_overlap(std::move(spans)))
    throw Error(
        fmt::format("{}: tensors '{}' (data_offsets [{}, {}]) and '{}' ([{}, {}]) share "
                    "bytes; each tensor needs its own",
                    src, o->first.name, o->first.begin, o->first.end, o->second.name,
                    o->second.begin, o->second.end));
  return out;
}

struct SafetensorsWriter::Impl {
  explicit Impl(fs::path p) : out(std::move(p)) {}
  AtomicFile out;  // PATH.partial until finish()
  uint64_t expected = 0, written = 0;
};

SafetensorsWriter::SafetensorsWriter(fs::path path, std::vector<SafetensorsSpec> specs,
                                     std::map<std::string, std::string> metadata)
    : impl_(std::make_unique<Impl>(std::move(path))) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& s : specs) {
    uint64_t numel = 1;
    for (int64_t d : s.shape) numel *= uint64_t(d);
    const uint64_t nb = numel * dtype_size(s.dtype);
    h[s.name] = {{"dtype", std::string(dtype_name(s.dtype))},
                 {"shape", s.shape},
                 {"data_offsets", {off, off + nb}}};
    off += nb;
  }
  impl_->expected = off;
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // keep tensor data 8-byte aligned
  const uint64_t n = header.size();
  impl_->out.write(std::string_view(reinterpret_cast<const char*>(&n), 8));
  impl_->out.write(header);
}

SafetensorsWriter::~SafetensorsWriter() = default;

void SafetensorsWriter::write(const void* bytes, size_t n) {
  KV_ASSERT(impl_->written + n <= impl_->expected);
  impl_->out.write(std::string_view(static_cast<const char*>(bytes), n));
  impl_->written += n;
}

void SafetensorsWriter::finish() {
  KV_CHECK(impl_->written == impl_->expected, "{}: wrote {} bytes of tensor data, declared {}",
           impl_->out.partial_path().string(), impl_->written, impl_->expected);
  impl_->out.commit();
}

}  // namespace kvscope
