// Runs the kvscope binary as a user would, capturing exit code, stdout and stderr.
#pragma once

#include <filesystem>
#include <string>

namespace kvscope::test {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

// `args` is appended to the binary path as given (quote it yourself); runs in `cwd`.
CliResult run_kvscope(const std::string& args, const std::filesystem::path& cwd = ".");

// A fresh, empty scratch directory under the system temp dir.
std::filesystem::path scratch_dir(const std::string& tag);

void write_text(const std::filesystem::path& p, const std::string& text);

}  // namespace kvscope::test
