// SHA-256 of files and strings (OpenSSL EVP), and checks against sha256sum-format lists
// such as data/SHA256SUMS, so a run records and verifies exactly which bytes it read.
#pragma once

#include <filesystem>
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

}  // namespace kvscope
