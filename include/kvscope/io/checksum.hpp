// SHA-256 of files and strings (OpenSSL EVP), and checks against sha256sum-format lists
// such as data/SHA256SUMS, so a run records and verifies exactly which bytes it read.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace kvscope {

// Lower-case hex SHA-256 of a file's bytes, read in 1 MiB chunks (constant memory, so
// multi-GB checkpoints are fine; the cost is one sequential read of the file).
// Throws Error naming the file when it cannot be opened or read.
std::string sha256_file(const std::filesystem::path& path);

// Lower-case hex SHA-256 of `bytes`.
std::string sha256_string(std::string_view bytes);

// Finds the entry for `path` in `sums_file` (sha256sum output: "HEX  ./rel/path" or
// "HEX *rel/path", paths relative to the sums file's directory; both sides are resolved
// to canonical paths before comparing), hashes the file and returns the hash.
// Throws Error naming the file, the expected and the actual hash on a mismatch, and
// naming both files when the sums file has no entry for `path`.
std::string verify_against_sums(const std::filesystem::path& path,
                                const std::filesystem::path& sums_file);

// The hash `sums_file` lists for `path`, or nullopt when it has no entry for it.
std::optional<std::string> listed_sha256(const std::filesystem::path& path,
                                         const std::filesystem::path& sums_file);

// Throws the mismatch Error unless actual == expected.
void check_sha256(const std::filesystem::path& path, const std::string& actual,
                  const std::string& expected, const std::filesystem::path& sums_file);

// The nearest SHA256SUMS in the directory of `path` or any directory above it.
std::optional<std::filesystem::path> find_sums_file(const std::filesystem::path& path);

// When the nearest SHA256SUMS lists `path`, checks that its hash is `actual` (computed
// by the caller, who usually needs it anyway); files no list mentions pass. This is how
// runs verify shipped models and texts (data/SHA256SUMS) at no extra read.
void check_listed_sha256(const std::filesystem::path& path, const std::string& actual);

}  // namespace kvscope
