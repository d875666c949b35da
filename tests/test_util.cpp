#include "test_util.hpp"

#include "kvscope/experiments/experiment.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

namespace kvscope::test {

namespace fs = std::filesystem;

TempDir::TempDir(const std::string& tag) {
  path = fs::temp_directory_path() / ("kvscope_test_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(path);
  fs::create_directories(path);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path, ec);
}

fs::path npm_modules() {
  if (const char* e = std::getenv("KVSCOPE_NPM_MODULES")) return e;
  return fs::path(KVSCOPE_SOURCE_DIR) / ".cache/npm/node_modules";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

CliResult run_kvscope(const std::string& args, const fs::path& cwd) {
  return run_kvscope_sh("", args, cwd);
}

bool one_line(const std::string& err) {
  return !err.empty() && err.back() == '\n' && err.find('\n') == err.size() - 1;
}

std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

CliResult run_kvscope_sh(const std::string& prefix, const std::string& args, const fs::path& cwd) {
  static int counter = 0;
  const std::string tmp =
      (fs::temp_directory_path() /
       ("kvscope_cli_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
          .string();
  const std::string cmd = "cd '" + cwd.string() + "' && " + prefix + "'" +
                          std::string(KVSCOPE_BINARY) + "' " + args + " >'" + tmp + ".out' 2>'" +
                          tmp + ".err'";
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(tmp + ".out");
  r.err = slurp(tmp + ".err");
  fs::remove(tmp + ".out");
  fs::remove(tmp + ".err");
  return r;
}

fs::path run_config(const fs::path& dir, const std::string& name, const std::string& yaml,
                    bool force) {
  write_bytes(dir / (name + ".yaml"), yaml);
  RunOptions o;
  o.results_root = dir / "results";
  o.verbose = false;
  o.force = force;
  return run_experiment(dir / (name + ".yaml"), o);
}

std::vector<int32_t> random_tokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(int32_t(rng() % 60) + 2);
  return t;
}

}  // namespace kvscope::test
