// The run manifest: everything needed to say what produced a results directory (config,
// input hashes, git commit, threads, timings), written beside the CSVs as pretty JSON.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kvscope/io/provenance.hpp"

namespace kvscope {

// One input file of a run.
struct FileRecord {
  std::string role;    // what the run used it for: "model", "tokenizer", "text", ...
  std::string path;    // as given in the config (not canonicalized, so manifests compare)
  std::string sha256;  // lower-case hex of the contents
  uint64_t bytes = 0;  // file size
};

// Hashes `path` (one full read; see sha256_file) and records its size.
FileRecord file_record(std::string role, const std::filesystem::path& path);

struct RunManifest {
  std::string name;                // experiment name (results/<name>/)
  std::string kind;                // experiment kind, e.g. "perplexity"
  nlohmann::json config;           // the experiment's config section, as read
  std::vector<FileRecord> inputs;  // models, tokenizers, texts
  std::string git_commit;          // see GitInfo::commit
  bool git_dirty = false;          // see GitInfo::dirty
  std::string git_source;          // "git", or "build" when git_commit is the fallback
  int threads = 0;                 // OpenMP/BLAS threads the run used
  double wall_seconds = 0.0;       // whole run, seconds
  std::string started_utc;         // utc_now_iso8601() at start
  std::string kvscope_version;     // KVSCOPE_VERSION of the binary
  nlohmann::json extra = nlohmann::json::object();  // BLAS info, per-stage timings, ...
  std::vector<std::string> outputs;  // files written, relative to the results directory

  nlohmann::json to_json() const;
};

// A manifest with the run context filled in: name, kind, started_utc, git (of
// `repo_dir`), threads (omp_get_max_threads) and kvscope_version.
RunManifest start_manifest(std::string name, std::string kind,
                           const std::filesystem::path& repo_dir);

// Parses to_json() output back; throws Error "SOURCE: manifest field 'x' ..." when a
// field is missing or has the wrong JSON type.
RunManifest manifest_from_json(const nlohmann::json& j, const std::string& source);

// Pretty (2-space) JSON plus a final newline, written atomically.
void write_manifest(const RunManifest& m, const std::filesystem::path& path);
// Throws Error naming `path` for a missing file, invalid JSON or a bad field.
RunManifest read_manifest(const std::filesystem::path& path);

}  // namespace kvscope
