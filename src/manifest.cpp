#include "kvscope/manifest.hpp"

#include <omp.h>

#include <cstdio>
#include <ctime>

#include "kvscope/atomic_file.hpp"
#include "kvscope/checksum.hpp"
#include "kvscope/error.hpp"
#include "kvscope/text_source.hpp"

#ifndef KVSCOPE_BUILD_COMMIT_FILE
#define KVSCOPE_BUILD_COMMIT_FILE ""
#endif
#ifndef KVSCOPE_VERSION
#define KVSCOPE_VERSION "unknown"
#endif

namespace kvscope {

namespace fs = std::filesystem;
using nlohmann::json;

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

// Strict field access for manifest_from_json: a manifest that lost a field should say so.
const json& field(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  KV_CHECK(it != j.end(), "{}: manifest field '{}' is missing", source, key);
  return *it;
}

template <class T>
T typed(const json& j, const char* key, const std::string& source, bool (json::*is)() const,
        const char* expected) {
  const json& v = field(j, key, source);
  KV_CHECK((v.*is)(), "{}: manifest field '{}' must be {}, got {}", source, key, expected,
           v.type_name());
  return v.get<T>();
}

std::string str(const json& j, const char* key, const std::string& source) {
  return typed<std::string>(j, key, source, &json::is_string, "a string");
}

}  // namespace

FileRecord file_record(std::string role, const fs::path& path) {
  FileRecord r;
  r.role = std::move(role);
  r.path = path.string();
  r.sha256 = sha256_file(path);  // throws naming the file when it is missing
  r.bytes = fs::file_size(path);
  return r;
}

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

std::string utc_now_iso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json RunManifest::to_json() const {
  json in = json::array();
  for (const auto& f : inputs)
    in.push_back({{"role", f.role}, {"path", f.path}, {"sha256", f.sha256}, {"bytes", f.bytes}});
  return json{{"name", name},
              {"kind", kind},
              {"config", config},
              {"inputs", in},
              {"git_commit", git_commit},
              {"git_dirty", git_dirty},
              {"git_source", git_source},
              {"threads", threads},
              {"wall_seconds", wall_seconds},
              {"started_utc", started_utc},
              {"kvscope_version", kvscope_version},
              {"extra", extra},
              {"outputs", outputs}};
}

RunManifest start_manifest(std::string name, std::string kind, const fs::path& repo_dir) {
  RunManifest m;
  m.name = std::move(name);
  m.kind = std::move(kind);
  m.started_utc = utc_now_iso8601();
  GitInfo g = git_info(repo_dir);
  m.git_commit = g.commit;
  m.git_dirty = g.dirty;
  m.git_source = g.from_git ? "git" : "build";
  m.threads = omp_get_max_threads();
  m.kvscope_version = KVSCOPE_VERSION;
  return m;
}

RunManifest manifest_from_json(const json& j, const std::string& src) {
  KV_CHECK(j.is_object(), "{}: a manifest must be a JSON object, got {}", src, j.type_name());
  RunManifest m;
  m.name = str(j, "name", src);
  m.kind = str(j, "kind", src);
  m.config = field(j, "config", src);
  const json& in = field(j, "inputs", src);
  KV_CHECK(in.is_array(), "{}: manifest field 'inputs' must be an array, got {}", src,
           in.type_name());
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string where = fmt::format("{} (inputs[{}])", src, i);
    KV_CHECK(in[i].is_object(), "{}: must be an object, got {}", where, in[i].type_name());
    FileRecord r;
    r.role = str(in[i], "role", where);
    r.path = str(in[i], "path", where);
    r.sha256 = str(in[i], "sha256", where);
    r.bytes =
        typed<uint64_t>(in[i], "bytes", where, &json::is_number_unsigned, "a non-negative integer");
    m.inputs.push_back(std::move(r));
  }
  m.git_commit = str(j, "git_commit", src);
  m.git_dirty = typed<bool>(j, "git_dirty", src, &json::is_boolean, "a boolean");
  m.git_source = str(j, "git_source", src);
  m.threads = typed<int>(j, "threads", src, &json::is_number_integer, "an integer");
  m.wall_seconds = typed<double>(j, "wall_seconds", src, &json::is_number, "a number");
  m.started_utc = str(j, "started_utc", src);
  m.kvscope_version = str(j, "kvscope_version", src);
  m.extra = field(j, "extra", src);
  const json& outs = field(j, "outputs", src);
  KV_CHECK(outs.is_array(), "{}: manifest field 'outputs' must be an array, got {}", src,
           outs.type_name());
  for (const auto& o : outs) {
    KV_CHECK(o.is_string(), "{}: manifest field 'outputs' must hold strings, got {}", src,
             o.type_name());
    m.outputs.push_back(o.get<std::string>());
  }
  return m;
}

void write_manifest(const RunManifest& m, const fs::path& path) {
  write_file_atomic(path, m.to_json().dump(2) + "\n");
}

RunManifest read_manifest(const fs::path& path) {
  const std::string text = read_file_bytes(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("{}: invalid JSON in manifest: {}", path.string(), e.what()));
  }
  return manifest_from_json(j, path.string());
}

}  // namespace kvscope
