// Internal helpers over the HDF5 C API: owning handles, attributes, and errors that carry
// the HDF5 error stack (so "No space left on device" reaches the user) instead of the
// library's own printing to stderr.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kvscope::h5 {

// Owns an hid_t and closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// Call before any other HDF5 use (idempotent): turns off HDF5's error printing (errors
// come back in our messages instead) and its exit-time shutdown.
void init();

// Throws Error("WHERE: WHAT failed: <innermost HDF5 messages>") when id/status < 0.
hid_t check(hid_t id, const std::string& where, const char* what);
void check_status(herr_t status, const std::string& where, const char* what);

// The IEEE half-precision file type (HDF5 1.10 has no predefined one); h5py reads it as
// numpy float16.
hid_t f16_type();

void write_attr(hid_t obj, const char* name, const std::string& value, const std::string& where);
void write_attr(hid_t obj, const char* name, int64_t value, const std::string& where);
void write_attr(hid_t obj, const char* name, double value, const std::string& where);

bool has_attr(hid_t obj, const char* name);
std::string read_attr_string(hid_t obj, const char* name, const std::string& where);
int64_t read_attr_int(hid_t obj, const char* name, const std::string& where);
double read_attr_double(hid_t obj, const char* name, const std::string& where);

// A 1-D dataset of variable-length UTF-8 strings (h5py: f[name].asstr()[...] gives str).
// Bytes that are not valid UTF-8 are written as the text "\xNN", so every reader can
// decode every entry.
void write_strings(hid_t loc, const char* name, const std::vector<std::string>& values,
                   const std::string& where);
// Reads a dataset written by write_strings.
std::vector<std::string> read_strings(hid_t loc, const char* name, const std::string& where);

// `s` with every byte that is not part of a valid UTF-8 sequence replaced by "\xNN".
std::string escape_invalid_utf8(const std::string& s);

// Dimensions of a dataset.
std::vector<hsize_t> dims(hid_t dataset, const std::string& where);

}  // namespace kvscope::h5
