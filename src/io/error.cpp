#include "kvscope/io/error.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace kvscope {

std::string Error::without_nul(const std::string& s) {
  if (s.find('\0') == std::string::npos) return s;
  std::string out;
  for (const char ch : s) {
    if (ch == '\0')
      out += "\\x00";
    else
      out += ch;
  }
  return out;
}

[[noreturn]] void throw_os_error(int err, const std::string& what) {
  if (err == ENOENT || err == ENOTDIR) throw NotFoundError(what);
  throw Error(what);
}

[[noreturn]] void assert_fail(const char* cond, const char* file, int line) {
  std::fprintf(stderr, "kvscope internal error: %s failed at %s:%d\n", cond, file, line);
  std::abort();
}

}  // namespace kvscope
