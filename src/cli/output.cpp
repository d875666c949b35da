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

std::string one_line(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '\n')
      out += "\\n";
    else if (ch == '\r')
      out += "\\r";
    else if (ch == '\t')
      out += "\\t";
    else if (u < 0x20 || u == 0x7f)
      out += fmt::format("\\x{:02x}", u);
    else
      out += ch;
  }
  return out;
}

void add_bos_flags(CLI::App& app, int& state) {
  CLI::Option* yes = app.add_flag_callback(
      "--bos", [&state] { state = 1; },
      "start the text with BOS even where the tokenizer's own rule adds none");
  CLI::Option* no = app.add_flag_callback(
      "--no-bos", [&state] { state = 0; },
      "do not start the text with BOS even where the tokenizer's own rule adds one");
  yes->excludes(no);
}

void apply_bos_flags(int state, Tokenizer& tok, const std::filesystem::path& tokenizer_path) {
  if (state >= 0) set_add_bos(tok, state == 1, state == 1 ? "--bos" : "--no-bos", tokenizer_path);
}

}  // namespace kvscope::cli
