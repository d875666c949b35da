#include "kvscope/io/checksum.hpp"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <vector>

#include "kvscope/io/error.hpp"

namespace kvscope {

namespace fs = std::filesystem;

namespace {

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

MdCtx new_sha256_ctx() {
  MdCtx ctx(EVP_MD_CTX_new());
  KV_ASSERT(ctx != nullptr);
  KV_ASSERT(EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1);
  return ctx;
}

std::string finish_hex(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  KV_ASSERT(EVP_DigestFinal_ex(ctx, md, &n) == 1);
  static const char* kHex = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (unsigned i = 0; i < n; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 0xf];
  }
  return out;
}

bool is_hex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex) return false;
  }
  return true;
}

std::string to_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

}  // namespace

std::string sha256_file(const fs::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    int err = errno;
    throw Error(fmt::format("cannot open '{}' for hashing: {}", path.string(), std::strerror(err)));
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(f, &std::fclose);
  MdCtx ctx = new_sha256_ctx();
  std::vector<unsigned char> buf(1 << 20);
  for (;;) {
    size_t n = std::fread(buf.data(), 1, buf.size(), f);
    if (n > 0) KV_ASSERT(EVP_DigestUpdate(ctx.get(), buf.data(), n) == 1);
    if (n < buf.size()) {
      if (std::ferror(f)) {
        int err = errno;
        throw Error(
            fmt::format("read error while hashing '{}': {}", path.string(), std::strerror(err)));
      }
      break;  // EOF
    }
  }
  return finish_hex(ctx.get());
}

std::string sha256_string(std::string_view bytes) {
  MdCtx ctx = new_sha256_ctx();
  KV_ASSERT(EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) == 1);
  return finish_hex(ctx.get());
}

std::optional<std::string> listed_sha256(const fs::path& path, const fs::path& sums_file) {
  std::ifstream in(sums_file, std::ios::binary);
  KV_CHECK(in.good(), "cannot open checksum list '{}': {}", sums_file.string(),
           std::strerror(errno));
  // Canonical paths on both sides so "./a/b", "a/b", symlinked dirs and relative/absolute
  // spellings of the same file all match.
  const fs::path target = fs::weakly_canonical(path);
  const fs::path base = fs::weakly_canonical(sums_file).parent_path();
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    // "HEX" + " " + (" " text mode | "*" binary mode) + name
    KV_CHECK(line.size() > 66 && is_hex64(std::string_view(line).substr(0, 64)) &&
                 line[64] == ' ' && (line[65] == ' ' || line[65] == '*'),
             "{}:{}: not a sha256sum line (expected '<64 hex>  <path>'), got '{}'",
             sums_file.string(), line_no, line);
    fs::path entry = line.substr(66);
    if (entry.is_relative()) entry = base / entry;
    if (fs::weakly_canonical(entry) == target) return to_lower(line.substr(0, 64));
  }
  return std::nullopt;
}

std::string verify_against_sums(const fs::path& path, const fs::path& sums_file) {
  KV_CHECK(fs::exists(path), "cannot verify '{}': file does not exist (checksum list '{}')",
           path.string(), sums_file.string());
  const std::optional<std::string> expected = listed_sha256(path, sums_file);
  KV_CHECK(expected.has_value(), "checksum list '{}' has no entry for '{}' (looked for './{}')",
           sums_file.string(), path.string(),
           fs::weakly_canonical(path)
               .lexically_relative(fs::weakly_canonical(sums_file).parent_path())
               .string());
  std::string actual = sha256_file(path);
  check_sha256(path, actual, *expected, sums_file);
  return actual;
}

void check_sha256(const fs::path& path, const std::string& actual, const std::string& expected,
                  const fs::path& sums_file) {
  KV_CHECK(actual == expected, "sha256 mismatch for '{}': expected {} (from '{}'), got {}",
           path.string(), expected, sums_file.string(), actual);
}

std::optional<fs::path> find_sums_file(const fs::path& path) {
  for (fs::path dir = fs::weakly_canonical(path).parent_path(); !dir.empty();
       dir = dir.parent_path()) {
    if (fs::is_regular_file(dir / "SHA256SUMS")) return dir / "SHA256SUMS";
    if (dir == dir.root_path()) break;
  }
  return std::nullopt;
}

void check_listed_sha256(const fs::path& path, const std::string& actual) {
  const std::optional<fs::path> sums = find_sums_file(path);
  if (!sums) return;
  if (const auto expected = listed_sha256(path, *sums))
    check_sha256(path, actual, *expected, *sums);
}

}  // namespace kvscope
