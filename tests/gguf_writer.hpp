// A test-only GGUF writer following ggml's docs/gguf.md (v3, little-endian): typed metadata,
// tensor infos, alignment padding, data. Independent of src/model/gguf.cpp (the reader it
// tests): it writes bytes by the spec, and can be told to lie (raw()) for hardening tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace kvscope::test {

class GgufWriter {
 public:
  enum Type : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 };

  uint32_t version = 3;
  uint64_t alignment = 32;  // written as general.alignment when != 32 or forced
  bool write_alignment = false;

  void u32(const std::string& k, uint32_t v) { scalar(k, U32, &v, 4); }
  void i32(const std::string& k, int32_t v) { scalar(k, I32, &v, 4); }
  void u64(const std::string& k, uint64_t v) { scalar(k, U64, &v, 8); }
  void f32(const std::string& k, float v) { scalar(k, F32, &v, 4); }
  void f64(const std::string& k, double v) { scalar(k, F64, &v, 8); }
  void boolean(const std::string& k, bool v) {
    const uint8_t b = v;
    scalar(k, BOOL, &b, 1);
  }
  void str(const std::string& k, const std::string& v) {
    key(k, STR);
    put_str(kv_, v);
  }
  void strs(const std::string& k, const std::vector<std::string>& v) {
    key(k, ARR);
    put(kv_, uint32_t(STR));
    put(kv_, uint64_t(v.size()));
    for (const auto& s : v) put_str(kv_, s);
  }
  template <class T>
  void arr(const std::string& k, Type et, const std::vector<T>& v) {
    key(k, ARR);
    put(kv_, uint32_t(et));
    put(kv_, uint64_t(v.size()));
    for (const T& x : v) put(kv_, x);
  }
  // An array of two arrays of u8 (nesting).
  void nested(const std::string& k, const std::vector<std::vector<uint8_t>>& v) {
    key(k, ARR);
    put(kv_, uint32_t(ARR));
    put(kv_, uint64_t(v.size()));
    for (const auto& in : v) {
      put(kv_, uint32_t(U8));
      put(kv_, uint64_t(in.size()));
      for (uint8_t b : in) put(kv_, b);
    }
  }
  // dims: ne0 (the contiguous one) first, as GGUF stores them.
  void tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t ggml_type,
              std::string bytes) {
    tensors_.push_back({name, std::move(dims), ggml_type, std::move(bytes)});
  }
  size_t n_kv() const { return n_kv_; }

  std::string bytes() const {
    std::string out;
    std::string kv = kv_;
    size_t n_kv = n_kv_;
    if (write_alignment || alignment != 32) {
      put_str(kv, "general.alignment");
      put(kv, uint32_t(U32));
      put(kv, uint32_t(alignment));
      ++n_kv;
    }
    put(out, uint32_t(0x46554747));  // "GGUF"
    put(out, version);
    put(out, uint64_t(tensors_.size()));
    put(out, uint64_t(n_kv));
    out += kv;
    uint64_t off = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
      put_str(out, t.name);
      put(out, uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) put(out, d);
      put(out, t.type);
      put(out, off);
      offsets.push_back(off);
      off = pad(off + t.data.size());
    }
    out.resize(pad(out.size()), '\0');
    for (size_t i = 0; i < tensors_.size(); ++i) {
      out += tensors_[i].data;
      out.resize(pad(out.size()), '\0');
    }
    return out;
  }

 private:
  struct T {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    std::string data;
  };
  std::string kv_;
  size_t n_kv_ = 0;
  std::vector<T> tensors_;

  uint64_t pad(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }
  template <class V>
  static void put(std::string& s, V v) {
    char b[sizeof(V)];
    std::memcpy(b, &v, sizeof(V));
    s.append(b, sizeof(V));
  }
  static void put_str(std::string& s, const std::string& v) {
    put(s, uint64_t(v.size()));
    s += v;
  }
  void key(const std::string& k, Type t) {
    put_str(kv_, k);
    put(kv_, uint32_t(t));
    ++n_kv_;
  }
  void scalar(const std::string& k, Type t, const void* v, size_t n) {
    key(k, t);
    kv_.append(static_cast<const char*>(v), n);
  }
};

}  // namespace kvscope::test
