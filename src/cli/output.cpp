#include <cerrno>
#include <cstdio>
#include <cstring>

#include "commands.hpp"
#include "kvscope/io/error.hpp"

namespace kvscope::cli {

void write_stdout(std::string_view bytes) {
  errno = 0;
  const size_t n = std::fwrite(bytes.data(), 1, bytes.size(), stdout);
  const int err = errno;
  KV_CHECK(n == bytes.size() && !std::ferror(stdout),
           "writing to standard output failed{}{}: the output is incomplete", err != 0 ? ": " : "",
           err != 0 ? std::strerror(err) : "");
}

}  // namespace kvscope::cli
