// Where a result came from: the git commit of the checkout (or of the build when run
// outside one) and the time. Manifests and dump files both record these.
#pragma once

#include <filesystem>
#include <string>

namespace kvscope {

struct GitInfo {
  std::string commit;     // 40-hex HEAD, else the configure-time commit (build_commit.txt)
  bool dirty = false;     // tracked files differ from HEAD (untracked files ignored)
  bool from_git = false;  // false when git failed and the build-time fallback was used
};

// Runs `git -C DIR rev-parse HEAD` and `git -C DIR status --porcelain
// --untracked-files=no` (stderr discarded). Never throws: when git is missing, DIR is not
// a repository or HEAD has no commit, returns the commit baked in at build time.
GitInfo git_info(const std::filesystem::path& repo_dir);

// The fingerprint of the sources this program was built from (sha256 over every file of
// src/, include/, experiments/, cmake/ and CMakeLists.txt; cmake/source_fingerprint.cmake),
// written beside the build at every build; "unknown" when that file is missing. Equal
// sources give equal fingerprints on every machine and compiler.
std::string source_fingerprint();

// Current UTC time as "2024-05-01T12:34:56Z".
std::string utc_now_iso8601();

}  // namespace kvscope
