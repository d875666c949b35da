// Progress of long runs (issue 32): every kind redraws a progress line (steps done, ETA)
// while stderr is a terminal, and writes none of it into a pipe or with -q. The terminal is
// a pseudo-terminal from util-linux's `script`.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>

#include "test_util.hpp"

using Catch::Contains;
namespace fs = std::filesystem;
using namespace kvscope;

namespace {

// Runs `kvscope ARGS` with stdout and stderr on a pseudo-terminal; returns what it showed.
std::string on_terminal(const std::string& args) {
  const std::string cmd = "cd '" + std::string(KVSCOPE_SOURCE_DIR) + "' && script -qec \"'" +
                          std::string(KVSCOPE_BINARY) + "' " + args + "\" /dev/null";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

}  // namespace

TEST_CASE("long kinds show progress on a terminal and none in a pipe or with -q",
          "[smoke][cli][progress]") {
  if (std::system("command -v script >/dev/null 2>&1") != 0) {
    WARN("skipped: no `script` (util-linux) to make a terminal");
    return;
  }
  test::TempDir tmp("progress");
  const fs::path smoke = fs::path(KVSCOPE_SOURCE_DIR) / "tests/data/smoke";
  const std::vector<std::pair<std::string, std::string>> kinds = {
      {"quant_drift", "valid: 2 models x sequence 0/2"},
      {"kv_cache_policies", "stories260K: retrieval probe (9 policies); task 0/5"},
      {"kv_head_finetune", "weights: step 0/"}};
  for (const auto& [kind, shown] : kinds) {
    INFO(kind);
    const std::string args = "run '" + (smoke / (kind + ".yaml")).string() + "' --results '" +
                             (tmp / "r").string() + "' --force";
    const std::string term = on_terminal(args);
    CHECK_THAT(term, Contains("\r[" + kind + "] unit 1/") && Contains(shown) && Contains("ETA"));
    const test::CliResult piped = test::run_kvscope(args);
    CHECK(piped.exit_code == 0);
    CHECK_THAT(piped.err, !Contains("\r") && !Contains(shown));
    CHECK_THAT(on_terminal(args + " -q"), !Contains(shown));
  }
}
