// Small helpers shared by the tests: scratch directories, whole-file reads and writes,
// and running the kvscope binary as a user would.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kvscope::test {

// A fresh, empty directory under the system temp dir, removed when the object goes. The
// pid in its name keeps parallel ctest processes apart.
#ifdef KVSCOPE_TEST_DATA_DIR  // the test target's (tests/CMakeLists.txt), not the fuzz tools'
// The shipped model most tests run on (llama2.c format, 260K parameters).
inline std::string stories260k() {
  return std::string(KVSCOPE_TEST_DATA_DIR) + "/models/stories260K/stories260K.bin";
}
#endif

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::filesystem::path operator/(const std::filesystem::path& p) const { return path / p; }
};

// Where scripts/fetch-test-tokenizers.sh puts the npm tokenizers (KVSCOPE_NPM_MODULES
// overrides): SOURCE/.cache/npm/node_modules.
std::filesystem::path npm_modules();

// The bytes of a file ("" when it cannot be read: tests assert on content).
std::string slurp(const std::filesystem::path& p);
void write_bytes(const std::filesystem::path& p, const std::string& bytes);

// Exactly one line on stderr, ending in a newline.
bool one_line(const std::string& err);
// The names of the files in `dir`, sorted: "nothing left behind" checks.
std::vector<std::string> listing(const std::filesystem::path& dir);

// n token ids drawn from [2, 62) by mt19937(seed): a sequence for the 64-token synthetic
// models of the eviction and codec tests.
std::vector<int32_t> random_tokens(int n, uint32_t seed);

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

// Writes `yaml` to DIR/NAME.yaml and runs it quietly with results under DIR/results
// (replacing earlier results when `force`); returns the results directory.
std::filesystem::path run_config(const std::filesystem::path& dir, const std::string& name,
                                 const std::string& yaml, bool force = false);

// Runs `kvscope ARGS` in `cwd` (ARGS appended as given: quote it yourself).
CliResult run_kvscope(const std::string& args, const std::filesystem::path& cwd = ".");
// The same through /bin/sh with `prefix` before the binary (e.g. "ulimit -f 64; " or
// "timeout -s KILL 3 ").
CliResult run_kvscope_sh(const std::string& prefix, const std::string& args,
                         const std::filesystem::path& cwd = ".");

// A shell prefix that makes any single allocation above ~3 GB fail in the child: `ulimit -v`
// normally; under ASan (which maps terabytes of shadow memory) its max_allocation_size_mb.
inline std::string memory_limit_3gb() {
#ifdef KVSCOPE_TEST_SANITIZED
  return "export ASAN_OPTIONS=max_allocation_size_mb=3000:allocator_may_return_null=1; ";
#else
  return "ulimit -v 3000000; ";
#endif
}

}  // namespace kvscope::test
