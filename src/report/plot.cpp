#include "kvscope/report/plot.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "kvscope/io/error.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/report/table.hpp"
#include "plot_detail.hpp"

namespace kvscope {

namespace fs = std::filesystem;

namespace {
std::function<void(const std::string&)>& script_hook() {
  static std::function<void(const std::string&)> hook;
  return hook;
}
}  // namespace

void set_gnuplot_script_hook(std::function<void(const std::string&)> hook) {
  script_hook() = std::move(hook);
}

std::string file_safe(const std::string& s) {
  std::string o;
  for (char c : s)
    o += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ? c : '_';
  return o;
}

void run_gnuplot(const std::string& script, const std::vector<fs::path>& outputs,
                 const std::string& what) {
  const fs::path err =
      fs::temp_directory_path() / ("kvscope_gnuplot_" + std::to_string(::getpid()) + ".err");
  if (script_hook()) script_hook()(script);
  const std::string cmd = "gnuplot 2>'" + err.string() + "'";
  std::FILE* p = ::popen(cmd.c_str(), "w");
  KV_CHECK(p != nullptr, "{}: cannot start gnuplot", what);
  std::fwrite(script.data(), 1, script.size(), p);
  const int status = ::pclose(p);
  std::string msg;
  try {
    msg = read_file_bytes(err);
  } catch (const Error&) {
  }
  std::error_code ec;
  fs::remove(err, ec);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto partial = [](const fs::path& f) {
    fs::path q = f;
    q += ".partial";
    return q;
  };
  if (code != 0) {
    for (const fs::path& f : outputs) fs::remove(partial(f), ec);
    KV_CHECK(code != 127, "{}: gnuplot is not installed (Debian: apt-get install gnuplot-nox)",
             what);
    throw Error(fmt::format("{}: gnuplot failed (exit {}): {}", what, code, msg));
  }
  for (const fs::path& f : outputs) {
    KV_CHECK(fs::exists(partial(f)), "{}: gnuplot did not write {}", what, partial(f).string());
    fs::rename(partial(f), f, ec);
    KV_CHECK(!ec, "{}: cannot rename {}: {}", what, partial(f).string(), ec.message());
  }
}

}  // namespace kvscope
