#include "kvscope/report/manifest.hpp"

#include <omp.h>

#include "kvscope/io/atomic_file.hpp"
#include "kvscope/io/checksum.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/provenance.hpp"
#include "kvscope/io/text_source.hpp"

#ifndef KVSCOPE_VERSION
#define KVSCOPE_VERSION "unknown"
#endif

namespace kvscope {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

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
  // Paths need not be UTF-8 (Linux allows any bytes in a name): replaced, never a throw
  // after the run's work is done.
  write_file_atomic(
      path, m.to_json().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
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
