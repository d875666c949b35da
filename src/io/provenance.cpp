#include "kvscope/io/provenance.hpp"

#include <cstdio>
#include <ctime>

#ifndef KVSCOPE_BUILD_COMMIT_FILE
#define KVSCOPE_BUILD_COMMIT_FILE ""
#endif
#ifndef KVSCOPE_SOURCE_FINGERPRINT_FILE
#define KVSCOPE_SOURCE_FINGERPRINT_FILE ""
#endif

namespace kvscope {

namespace fs = std::filesystem;

namespace {

// POSIX shell single-quoting: 'it'\''s' — the path goes through popen's /bin/sh.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

// Runs `cmd` through the shell; returns its stdout, or false when it exits non-zero.
bool run_capture(const std::string& cmd, std::string& out) {
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return false;
  out.clear();
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  return status == 0;
}

bool is_hex_commit(const std::string& s) {
  if (s.size() != 40 && s.size() != 64) return false;  // SHA-1 or SHA-256 repositories
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

GitInfo git_info(const fs::path& repo_dir) {
  GitInfo info;
  const std::string git = "git -C " + shell_quote(repo_dir.string());
  std::string out;
  if (run_capture(git + " rev-parse HEAD 2>/dev/null", out)) {
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (is_hex_commit(out)) {
      info.commit = out;
      info.from_git = true;
      std::string status;
      if (run_capture(git + " status --porcelain --untracked-files=no 2>/dev/null", status))
        info.dirty = !status.empty();
      return info;
    }
  }
  // Outside a checkout: the commit the build was configured at (CMakeLists.txt).
  info.commit = "unknown";
  if (std::FILE* f = std::fopen(KVSCOPE_BUILD_COMMIT_FILE, "r")) {
    char buf[64] = {};
    if (std::fgets(buf, sizeof buf, f)) {
      std::string c(buf);
      while (!c.empty() && (c.back() == '\n' || c.back() == '\r')) c.pop_back();
      if (is_hex_commit(c)) info.commit = c;
    }
    std::fclose(f);
  }
  return info;
}

std::string source_fingerprint() {
  std::string h = "unknown";
  if (std::FILE* f = std::fopen(KVSCOPE_SOURCE_FINGERPRINT_FILE, "r")) {
    char buf[80] = {};
    if (std::fgets(buf, sizeof buf, f)) {
      std::string s(buf);
      while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
      if (is_hex_commit(s)) h = s;  // 64 hex digits
    }
    std::fclose(f);
  }
  return h;
}

std::string utc_now_iso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace kvscope
