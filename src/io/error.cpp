#include "kvscope/io/error.hpp"

#include <cstdio>
#include <cstdlib>

namespace kvscope {

[[noreturn]] void assert_fail(const char* cond, const char* file, int line) {
  std::fprintf(stderr, "kvscope internal error: %s failed at %s:%d\n", cond, file, line);
  std::abort();
}

}  // namespace kvscope
