#include "kvscope/io/hdf5_util.hpp"

#include <cstdlib>
#include <cstring>

#include "kvscope/io/error.hpp"

namespace kvscope::h5 {

namespace {

// Collects "major: minor: description" lines of the current error stack, innermost last.
herr_t collect(unsigned n, const H5E_error2_t* e, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  (void)n;
  out->push_back(e->desc ? e->desc : "");
  return 0;
}

std::string stack_text() {
  std::vector<std::string> msgs;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect, &msgs);
  H5Eclear2(H5E_DEFAULT);
  // An OS failure (full disk, missing directory) carries "errno = N" inside a description
  // full of internals (descriptors, offsets, "bytes actually written = 2^64 - 1"): the errno
  // is all a user needs.
  for (const std::string& m : msgs) {
    const size_t at = m.find("errno = ");
    if (at == std::string::npos) continue;
    const int err = std::atoi(m.c_str() + at + 8);
    if (err > 0) return fmt::format("{} (errno {})", std::strerror(err), err);
  }
  std::string s;
  // Upward walk: innermost (most specific, e.g. the OS error) first.
  for (size_t i = 0; i < msgs.size() && i < 3; ++i) {
    if (msgs[i].empty()) continue;
    s += (s.empty() ? "" : "; ") + msgs[i];
  }
  return s.empty() ? "unknown HDF5 error" : s;
}

}  // namespace

void init() {
  static const bool done = [] {
    // No library shutdown at exit: after a failed write (full disk) HDF5 keeps a file
    // object it cannot close, and its exit handler crashes closing it again. Every file
    // kvscope writes is closed (or deleted as partial) before exit anyway.
    H5dont_atexit();
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

hid_t check(hid_t id, const std::string& where, const char* what) {
  if (id < 0) throw Error(fmt::format("{}: {} failed: {}", where, what, stack_text()));
  return id;
}

void check_status(herr_t status, const std::string& where, const char* what) {
  if (status < 0) throw Error(fmt::format("{}: {} failed: {}", where, what, stack_text()));
}

hid_t f16_type() {
  static hid_t t = [] {
    // sign bit 15, exponent bits 10..14 (bias 15), mantissa bits 0..9.
    hid_t x = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(x, 15, 10, 5, 0, 10);
    H5Tset_precision(x, 16);
    H5Tset_size(x, 2);
    H5Tset_ebias(x, 15);
    return x;
  }();
  return t;
}

void write_attr(hid_t obj, const char* name, const std::string& value, const std::string& where) {
  // Variable-length UTF-8: h5py returns these as str (fixed-length ones come back as bytes).
  Handle type(check(H5Tcopy(H5T_C_S1), where, "H5Tcopy"), H5Tclose);
  check_status(H5Tset_size(type, H5T_VARIABLE), where, "H5Tset_size");
  check_status(H5Tset_cset(type, H5T_CSET_UTF8), where, "H5Tset_cset");
  Handle space(check(H5Screate(H5S_SCALAR), where, "H5Screate"), H5Sclose);
  Handle a(check(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), where, name),
           H5Aclose);
  const char* p = value.c_str();
  check_status(H5Awrite(a, type, &p), where, name);
}

void write_attr(hid_t obj, const char* name, int64_t value, const std::string& where) {
  Handle space(check(H5Screate(H5S_SCALAR), where, "H5Screate"), H5Sclose);
  Handle a(
      check(H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), where, name),
      H5Aclose);
  check_status(H5Awrite(a, H5T_NATIVE_INT64, &value), where, name);
}

void write_attr(hid_t obj, const char* name, double value, const std::string& where) {
  Handle space(check(H5Screate(H5S_SCALAR), where, "H5Screate"), H5Sclose);
  Handle a(
      check(H5Acreate2(obj, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT), where, name),
      H5Aclose);
  check_status(H5Awrite(a, H5T_NATIVE_DOUBLE, &value), where, name);
}

bool has_attr(hid_t obj, const char* name) {
  return H5Aexists(obj, name) > 0;
}

std::string read_attr_string(hid_t obj, const char* name, const std::string& where) {
  KV_CHECK(has_attr(obj, name), "{}: attribute '{}' is missing", where, name);
  Handle a(check(H5Aopen(obj, name, H5P_DEFAULT), where, name), H5Aclose);
  Handle ft(check(H5Aget_type(a), where, name), H5Tclose);
  KV_CHECK(H5Tget_class(ft) == H5T_STRING, "{}: attribute '{}' is not a string", where, name);
  if (H5Tis_variable_str(ft) > 0) {
    Handle mt(check(H5Tcopy(H5T_C_S1), where, name), H5Tclose);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(ft));
    char* p = nullptr;
    check_status(H5Aread(a, mt, &p), where, name);
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  const size_t n = H5Tget_size(ft);
  std::string s(n, '\0');
  Handle mt(check(H5Tcopy(H5T_C_S1), where, name), H5Tclose);
  H5Tset_size(mt, n);
  check_status(H5Aread(a, mt, s.data()), where, name);
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

int64_t read_attr_int(hid_t obj, const char* name, const std::string& where) {
  KV_CHECK(has_attr(obj, name), "{}: attribute '{}' is missing", where, name);
  Handle a(check(H5Aopen(obj, name, H5P_DEFAULT), where, name), H5Aclose);
  int64_t v = 0;
  check_status(H5Aread(a, H5T_NATIVE_INT64, &v), where, name);
  return v;
}

double read_attr_double(hid_t obj, const char* name, const std::string& where) {
  KV_CHECK(has_attr(obj, name), "{}: attribute '{}' is missing", where, name);
  Handle a(check(H5Aopen(obj, name, H5P_DEFAULT), where, name), H5Aclose);
  double v = 0;
  check_status(H5Aread(a, H5T_NATIVE_DOUBLE, &v), where, name);
  return v;
}

namespace {

// Length of the valid UTF-8 sequence starting at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0 when the bytes there are not one.
size_t utf8_sequence_length(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

}  // namespace

std::string escape_invalid_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_sequence_length(s, i);
    if (n == 0) {
      out += fmt::format("\\x{:02X}", static_cast<unsigned char>(s[i]));
      ++i;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

void write_strings(hid_t loc, const char* name, const std::vector<std::string>& values,
                   const std::string& where) {
  Handle type(check(H5Tcopy(H5T_C_S1), where, "H5Tcopy"), H5Tclose);
  check_status(H5Tset_size(type, H5T_VARIABLE), where, "H5Tset_size");
  check_status(H5Tset_cset(type, H5T_CSET_UTF8), where, "H5Tset_cset");
  const hsize_t n = values.size();
  Handle space(check(H5Screate_simple(1, &n, nullptr), where, "H5Screate_simple"), H5Sclose);
  Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), where, "H5Pcreate"), H5Pclose);
  check_status(H5Pset_obj_track_times(dcpl, false), where, "H5Pset_obj_track_times");
  Handle d(check(H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), where, name),
           H5Dclose);
  std::vector<std::string> clean;
  clean.reserve(values.size());
  for (const std::string& v : values) clean.push_back(escape_invalid_utf8(v));
  std::vector<const char*> ptrs;
  ptrs.reserve(clean.size());
  for (const std::string& v : clean) ptrs.push_back(v.c_str());
  if (!ptrs.empty())
    check_status(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), where, name);
}

std::vector<std::string> read_strings(hid_t loc, const char* name, const std::string& where) {
  Handle d(check(H5Dopen2(loc, name, H5P_DEFAULT), where, name), H5Dclose);
  Handle ft(check(H5Dget_type(d), where, name), H5Tclose);
  KV_CHECK(H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) > 0,
           "{}: dataset '{}' is not variable-length strings", where, name);
  const std::vector<hsize_t> shape = dims(d, where);
  KV_CHECK(shape.size() == 1, "{}: dataset '{}' has {} axes, expected 1", where, name,
           shape.size());
  Handle mt(check(H5Tcopy(H5T_C_S1), where, name), H5Tclose);
  H5Tset_size(mt, H5T_VARIABLE);
  H5Tset_cset(mt, H5Tget_cset(ft));
  std::vector<char*> ptrs(shape[0], nullptr);
  if (!ptrs.empty())
    check_status(H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), where, name);
  std::vector<std::string> out;
  out.reserve(ptrs.size());
  for (char* p : ptrs) {
    out.emplace_back(p ? p : "");
    H5free_memory(p);
  }
  return out;
}

std::vector<hsize_t> dims(hid_t dataset, const std::string& where) {
  Handle space(check(H5Dget_space(dataset), where, "H5Dget_space"), H5Sclose);
  const int nd = H5Sget_simple_extent_ndims(space);
  KV_CHECK(nd >= 0, "{}: cannot read dataset rank", where);
  std::vector<hsize_t> d(static_cast<size_t>(nd));
  H5Sget_simple_extent_dims(space, d.data(), nullptr);
  return d;
}

}  // namespace kvscope::h5
