// Errors a user can cause (bad file, bad key, wrong shape) throw kvscope::Error with a
// message naming the file/key/tensor and the expected and actual values; main() catches
// once and exits non-zero. Internal invariants use KV_ASSERT, which names file and line.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace kvscope {

class Error : public std::runtime_error {
 public:
  // A NUL byte quoted from a file (a name in a YAML config) would end what() early: it is
  // written as \x00 instead.
  explicit Error(const std::string& what) : std::runtime_error(without_nul(what)) {}

 private:
  static std::string without_nul(const std::string& s);
};

// A file or directory the user named that does not exist: the Python module raises
// FileNotFoundError for it; the command line treats it like any Error.
class NotFoundError : public Error {
 public:
  using Error::Error;
};

// Throws NotFoundError for ENOENT (and ENOTDIR: a path through a plain file), else Error.
[[noreturn]] void throw_os_error(int err, const std::string& what);

[[noreturn]] void assert_fail(const char* cond, const char* file, int line);

}  // namespace kvscope

// Throw a user-facing Error when `cond` is false; the message is fmt-formatted.
#define KV_CHECK(cond, ...)                                        \
  do {                                                             \
    if (!(cond)) throw ::kvscope::Error(fmt::format(__VA_ARGS__)); \
  } while (0)

// KV_CHECK for a path that must exist: throws NotFoundError.
#define KV_CHECK_FOUND(cond, ...)                                          \
  do {                                                                     \
    if (!(cond)) throw ::kvscope::NotFoundError(fmt::format(__VA_ARGS__)); \
  } while (0)

// Internal invariant: a failure is a kvscope bug, not a user error.
#define KV_ASSERT(cond)                                             \
  do {                                                              \
    if (!(cond)) ::kvscope::assert_fail(#cond, __FILE__, __LINE__); \
  } while (0)
