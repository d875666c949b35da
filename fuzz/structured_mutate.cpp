#include "structured_mutate.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "kvscope/io/json_util.hpp"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace kvscope::fuzz {

using nlohmann::json;

namespace {

template <class T>
const T& pick(const std::vector<T>& v, Rng& rng) {
  return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
}
size_t below(size_t n, Rng& rng) {
  return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
}

// ---- JSON -----------------------------------------------------------------------------

// The values a lying config writes: around 0, around 2^31 / 2^32 / 2^63, non-integers,
// floats past a float's range, the value itself nudged.
json edge_number(const json& v, Rng& rng) {
  const double d = v.is_number() ? v.get<double>() : 1.0;
  const std::vector<json> fixed = {0,
                                   1,
                                   -1,
                                   2,
                                   3,
                                   7,
                                   16,
                                   255,
                                   65536,
                                   16777217,
                                   2147483647,
                                   2147483648LL,
                                   4294967298LL,
                                   -2147483649LL,
                                   std::numeric_limits<int64_t>::max(),
                                   std::numeric_limits<uint64_t>::max(),
                                   2.9,
                                   1.0,
                                   0.5,
                                   0.01,
                                   1e39,
                                   -1e39,
                                   1e-50,
                                   1e308,
                                   d + 1,
                                   d - 1,
                                   d * 2,
                                   d / 2,
                                   -d};
  json out = pick(fixed, rng);
  const double o = out.is_number() ? out.get<double>() : 0.0;
  if (v.is_number_integer() && out.is_number_float() && std::fabs(o) < 9e18 && below(2, rng) == 0)
    out = int64_t(o);  // keep integer type half the time
  return out;
}

json other_type(const json& v, Rng& rng) {
  const std::vector<json> values = {
      nullptr, true, false, "", "x", json::array(), json::object(), json::array({1, 2}),
      "1e5",   1.5};
  json out = pick(values, rng);
  if (out == v) out = nullptr;
  return out;
}

void collect(json& j, std::vector<json*>& out, int depth) {
  out.push_back(&j);
  if (depth > 16) return;
  if (j.is_object())
    for (auto& [k, v] : j.items()) collect(v, out, depth + 1);
  else if (j.is_array())
    for (json& v : j) collect(v, out, depth + 1);
}

void mutate_json_value(json& root, Rng& rng) {
  std::vector<json*> nodes;
  collect(root, nodes, 0);
  json& n = *pick(nodes, rng);
  switch (below(6, rng)) {
    case 0:
    case 1:
    case 2:
      n = n.is_number() || below(3, rng) == 0 ? edge_number(n, rng) : other_type(n, rng);
      break;
    case 3:
      if (n.is_object() && !n.empty()) {
        auto it = n.begin();
        std::advance(it, long(below(n.size(), rng)));
        n.erase(it);
      } else {
        n = other_type(n, rng);
      }
      break;
    case 4:
      if (n.is_array() && !n.empty())
        n.erase(below(n.size(), rng));
      else
        n = edge_number(n, rng);
      break;
    default:
      if (n.is_array() && !n.empty())
        n.push_back(n[below(n.size(), rng)]);
      else
        n = other_type(n, rng);
  }
}

// ---- GGUF -----------------------------------------------------------------------------

struct Reader {
  std::string_view b;
  size_t p = 0;
  bool ok = true;
  template <class T>
  T get() {
    T v{};
    if (b.size() - p < sizeof(T)) {
      ok = false;
      p = b.size();
      return v;
    }
    std::memcpy(&v, b.data() + p, sizeof(T));
    p += sizeof(T);
    return v;
  }
  std::string str() {
    const uint64_t n = get<uint64_t>();
    if (!ok || n > b.size() - p) {
      ok = false;
      return {};
    }
    std::string s(b.substr(p, n));
    p += n;
    return s;
  }
};

template <class T>
void put(std::string& s, T v) {
  char c[sizeof(T)];
  std::memcpy(c, &v, sizeof(T));
  s.append(c, sizeof(T));
}
void put_str(std::string& s, const std::string& v) {
  put(s, uint64_t(v.size()));
  s += v;
}

constexpr size_t kScalarBytes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

// Skips one value of `type`, for the raw copy of a metadata entry.
void skip_value(Reader& r, uint32_t type, int depth) {
  if (type > 12 || depth > 4) {
    r.ok = false;
    return;
  }
  if (type == 8) {
    r.str();
  } else if (type == 9) {
    const uint32_t et = r.get<uint32_t>();
    const uint64_t n = r.get<uint64_t>();
    if (!r.ok || n > r.b.size()) {
      r.ok = false;
      return;
    }
    for (uint64_t i = 0; i < n && r.ok; ++i) skip_value(r, et, depth + 1);
  } else {
    if (r.b.size() - r.p < kScalarBytes[type]) r.ok = false;
    r.p = std::min(r.b.size(), r.p + kScalarBytes[type]);
  }
}

struct Gguf {
  uint32_t version = 3;
  struct Kv {
    std::string key;
    uint32_t type;
    std::string value;  // raw bytes after the type
  };
  struct Info {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    uint64_t offset;
  };
  std::vector<Kv> kvs;
  std::vector<Info> infos;
  uint64_t alignment = 32;
  std::string data;

  static std::optional<Gguf> parse(std::string_view b) {
    Reader r{b};
    Gguf g;
    if (r.get<uint32_t>() != 0x46554747u) return std::nullopt;
    g.version = r.get<uint32_t>();
    const uint64_t nt = r.get<uint64_t>(), nkv = r.get<uint64_t>();
    if (!r.ok || nt > 100000 || nkv > 100000) return std::nullopt;
    for (uint64_t i = 0; i < nkv && r.ok; ++i) {
      Kv kv;
      kv.key = r.str();
      kv.type = r.get<uint32_t>();
      const size_t start = r.p;
      skip_value(r, kv.type, 0);
      kv.value = std::string(b.substr(start, r.p - start));
      if (kv.key == "general.alignment" && kv.type == 4 && kv.value.size() == 4) {
        uint32_t a;
        std::memcpy(&a, kv.value.data(), 4);
        if (a > 0 && a <= (1u << 20)) g.alignment = a;
      }
      g.kvs.push_back(std::move(kv));
    }
    for (uint64_t i = 0; i < nt && r.ok; ++i) {
      Info t;
      t.name = r.str();
      const uint32_t nd = r.get<uint32_t>();
      if (nd > 8) return std::nullopt;
      for (uint32_t d = 0; d < nd; ++d) t.dims.push_back(r.get<uint64_t>());
      t.type = r.get<uint32_t>();
      t.offset = r.get<uint64_t>();
      g.infos.push_back(std::move(t));
    }
    if (!r.ok) return std::nullopt;
    const size_t start = (r.p + g.alignment - 1) / g.alignment * g.alignment;
    g.data = start <= b.size() ? std::string(b.substr(start)) : std::string();
    return g;
  }

  std::string bytes() const {
    std::string s;
    put(s, uint32_t(0x46554747u));
    put(s, version);
    put(s, uint64_t(infos.size()));
    put(s, uint64_t(kvs.size()));
    for (const Kv& kv : kvs) {
      put_str(s, kv.key);
      put(s, kv.type);
      s += kv.value;
    }
    for (const Info& t : infos) {
      put_str(s, t.name);
      put(s, uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) put(s, d);
      put(s, t.type);
      put(s, t.offset);
    }
    s.resize((s.size() + alignment - 1) / alignment * alignment, '\0');
    return s + data;
  }
};

// An edge value for a scalar of `type`, as raw bytes.
std::string edge_scalar(uint32_t type, const std::string& old, Rng& rng) {
  std::string s;
  const size_t n = kScalarBytes[type];
  if (type == 6 || type == 12) {
    const double cur = [&] {
      if (old.size() == 4) {
        float f;
        std::memcpy(&f, old.data(), 4);
        return double(f);
      }
      double d = 0;
      if (old.size() == 8) std::memcpy(&d, old.data(), 8);
      return d;
    }();
    const std::vector<double> vals = {0.0,
                                      -0.0,
                                      1.0,
                                      -1.0,
                                      1e-45,
                                      1e39,
                                      3.4e38,
                                      -cur,
                                      cur * 1e6,
                                      cur / 1e6,
                                      std::numeric_limits<double>::infinity(),
                                      -std::numeric_limits<double>::infinity(),
                                      std::numeric_limits<double>::quiet_NaN()};
    const double v = pick(vals, rng);
    if (type == 6) {  // a double outside a float's range converts to inf, not by a cast (UB)
      const double m = double(std::numeric_limits<float>::max());
      put(s, std::isnan(v) || std::fabs(v) <= m ? float(v)
                                                : std::copysign(HUGE_VALF, float(v > 0 ? 1 : -1)));
    } else {
      put(s, v);
    }
    return s;
  }
  uint64_t cur = 0;
  std::memcpy(&cur, old.data(), std::min(old.size(), sizeof cur));
  const std::vector<uint64_t> vals = {0,
                                      1,
                                      2,
                                      3,
                                      5,
                                      6,
                                      ~uint64_t(0),
                                      0x7fffffffu,
                                      0x80000000u,
                                      0xffffffffu,
                                      (uint64_t(1) << 32) + 2,
                                      uint64_t(1) << 24,
                                      (uint64_t(1) << 24) + 1,
                                      uint64_t(1) << 63,
                                      cur + 1,
                                      cur - 1,
                                      cur * 2,
                                      cur / 2};
  const uint64_t v = pick(vals, rng);
  s.append(reinterpret_cast<const char*>(&v), n);  // little-endian: the low bytes
  return s;
}

void mutate_gguf_struct(Gguf& g, Rng& rng) {
  const std::vector<uint64_t> dims = {0,  1,   2,          3,          31,        32,
                                      33, 256, 1ull << 32, 1ull << 40, 1ull << 63};
  switch (below(9, rng)) {
    case 0:
    case 1:
    case 2: {  // a scalar metadata value
      std::vector<Gguf::Kv*> scalars;
      for (Gguf::Kv& kv : g.kvs)
        if (kv.type <= 12 && kScalarBytes[kv.type] > 0) scalars.push_back(&kv);
      if (scalars.empty()) return;
      Gguf::Kv& kv = *pick(scalars, rng);
      kv.value = edge_scalar(kv.type, kv.value, rng);
      return;
    }
    case 3: {  // a value's type (the value rewritten at the new width)
      if (g.kvs.empty()) return;
      Gguf::Kv& kv = g.kvs[below(g.kvs.size(), rng)];
      const std::vector<uint32_t> types = {0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12};
      kv.type = pick(types, rng);
      kv.value = edge_scalar(kv.type, kv.value, rng);
      return;
    }
    case 4: {  // drop an entry or an array's tail
      if (g.kvs.empty()) return;
      const size_t i = below(g.kvs.size(), rng);
      Gguf::Kv& kv = g.kvs[i];
      if (kv.type == 9 && kv.value.size() >= 12 && below(2, rng) == 0) {
        uint32_t et;
        uint64_t n;
        std::memcpy(&et, kv.value.data(), 4);
        std::memcpy(&n, kv.value.data() + 4, 8);
        if (et <= 12 && kScalarBytes[et] > 0 && n > 0) {  // scalar arrays: one fewer
          --n;
          std::memcpy(kv.value.data() + 4, &n, 8);
          kv.value.resize(12 + n * kScalarBytes[et]);
          return;
        }
      }
      g.kvs.erase(g.kvs.begin() + long(i));
      return;
    }
    case 5: {  // a tensor dim
      if (g.infos.empty()) return;
      Gguf::Info& t = g.infos[below(g.infos.size(), rng)];
      if (t.dims.empty() || below(4, rng) == 0) {
        if (t.dims.size() > 1 && below(2, rng))
          t.dims.pop_back();
        else
          t.dims.push_back(pick(dims, rng));
      } else {
        uint64_t& d = t.dims[below(t.dims.size(), rng)];
        const std::vector<uint64_t> near = {d + 1, d - 1, d * 2, d / 2};
        d = below(2, rng) ? pick(dims, rng) : pick(near, rng);
      }
      return;
    }
    case 6: {  // a tensor's ggml type
      if (g.infos.empty()) return;
      const std::vector<uint32_t> types = {0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 30, 16, 99};
      g.infos[below(g.infos.size(), rng)].type = pick(types, rng);
      return;
    }
    case 7: {  // a tensor's offset: onto another tensor, a step off, far away
      if (g.infos.empty()) return;
      Gguf::Info& t = g.infos[below(g.infos.size(), rng)];
      const std::vector<uint64_t> offs = {0,
                                          g.infos[below(g.infos.size(), rng)].offset,
                                          t.offset + g.alignment,
                                          t.offset - g.alignment,
                                          t.offset + 1,
                                          uint64_t(1) << 62,
                                          g.data.size()};
      t.offset = pick(offs, rng);
      return;
    }
    default: {  // drop a tensor, or move it to another layer
      if (g.infos.empty()) return;
      const size_t i = below(g.infos.size(), rng);
      std::string& name = g.infos[i].name;
      const size_t dot = name.find('.', 4);
      if (name.rfind("blk.", 0) == 0 && dot != std::string::npos && below(2, rng)) {
        const std::vector<std::string> layers = {"0", "1", "2", "7", "4294967295"};
        name = "blk." + pick(layers, rng) + name.substr(dot);
      } else {
        g.infos.erase(g.infos.begin() + long(i));
      }
    }
  }
}

}  // namespace

std::optional<std::string> mutate_json(std::string_view text, Rng& rng) {
  if (json_nesting(text, kMaxJsonDepth) > kMaxJsonDepth) return std::nullopt;  // dump() recurses
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  mutate_json_value(j, rng);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<std::string> mutate_gguf(std::string_view bytes, Rng& rng) {
  std::optional<Gguf> g = Gguf::parse(bytes);
  if (!g) return std::nullopt;
  mutate_gguf_struct(*g, rng);
  return g->bytes();
}

std::optional<std::string> mutate_safetensors(std::string_view bytes, Rng& rng) {
  if (bytes.size() < 8) return std::nullopt;
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  if (n > bytes.size() - 8 || json_nesting(bytes.substr(8, n), kMaxJsonDepth) > kMaxJsonDepth)
    return std::nullopt;
  json h = json::parse(bytes.substr(8, n), nullptr, false);
  if (h.is_discarded() || !h.is_object() || h.empty()) return std::nullopt;
  auto it = h.begin();
  std::advance(it, long(below(h.size(), rng)));
  json& e = it.value();
  if (e.is_object() && below(3, rng) == 0) {
    const std::vector<std::string> dtypes = {"F32", "F16", "BF16", "I8", "F64", ""};
    e["dtype"] = pick(dtypes, rng);
  } else if (e.is_object() && e.contains("data_offsets") && below(2, rng) == 0) {
    // Onto another tensor's bytes, or a step off.
    const json& other = std::next(h.begin(), long(below(h.size(), rng))).value();
    if (other.is_object() && other.contains("data_offsets") && below(2, rng))
      e["data_offsets"] = other["data_offsets"];
    else
      mutate_json_value(e["data_offsets"], rng);
  } else {
    mutate_json_value(e, rng);
  }
  std::string hs = h.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string out;
  put(out, uint64_t(hs.size()));
  return out + hs + std::string(bytes.substr(8 + n));
}

size_t mutate_either(uint8_t* data, size_t size, size_t max_size, unsigned seed,
                     std::optional<std::string> (*structured)(std::string_view, Rng&)) {
  Rng rng(seed);
  if (below(2, rng) == 0) {
    const std::optional<std::string> m =
        structured(std::string_view(reinterpret_cast<const char*>(data), size), rng);
    if (m && m->size() <= max_size) {
      std::memcpy(data, m->data(), m->size());
      return m->size();
    }
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

}  // namespace kvscope::fuzz
