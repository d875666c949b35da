#include "cli_runner.hpp"

#include <sys/wait.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace kvscope::test {

namespace fs = std::filesystem;

namespace {
std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

fs::path scratch_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("kvscope_test_" + tag);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p);
  out << text;
}

CliResult run_kvscope(const std::string& args, const fs::path& cwd) {
  static int counter = 0;
  const fs::path tmp = fs::temp_directory_path() / ("kvscope_cli_" + std::to_string(::getpid()) +
                                                    "_" + std::to_string(counter++));
  const std::string cmd = "cd '" + cwd.string() + "' && '" + std::string(KVSCOPE_BINARY) + "' " +
                          args + " >'" + tmp.string() + ".out' 2>'" + tmp.string() + ".err'";
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(tmp.string() + ".out");
  r.err = slurp(tmp.string() + ".err");
  fs::remove(tmp.string() + ".out");
  fs::remove(tmp.string() + ".err");
  return r;
}

}  // namespace kvscope::test
