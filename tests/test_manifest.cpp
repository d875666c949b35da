// Run manifests: JSON round trip, git provenance with its build-time fallback.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "kvscope/io/checksum.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/report/manifest.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;

using kvscope::test::slurp;
using kvscope::test::TempDir;

namespace {

bool is_hex40(const std::string& s) {
  return std::regex_match(s, std::regex("[0-9a-f]{40}"));
}

kvscope::RunManifest sample() {
  kvscope::RunManifest m;
  m.name = "ppl_stories260K";
  m.kind = "perplexity";
  m.config = json::parse(R"({"window": 256, "stride": 128, "models": ["a", "b"], "r": 0.5})");
  m.inputs.push_back({"model", "data/models/stories260K/stories260K.bin",
                      "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696", 1052876});
  m.inputs.push_back({"text", "data/text/tinyshakespeare.txt", std::string(64, 'a'), 0});
  m.git_commit = std::string(40, 'f');
  m.git_dirty = true;
  m.git_source = "git";
  m.threads = 8;
  m.wall_seconds = 12.375;
  m.started_utc = "2024-05-01T12:34:56Z";
  m.kvscope_version = "0.1.0";
  m.extra = json::parse(R"({"blas": "openblas-openmp", "stages": {"load": 0.25}})");
  m.outputs = {"ppl.csv", "manifest.json"};
  return m;
}

}  // namespace

TEST_CASE("manifest: JSON round trip through a file", "[infra][manifest]") {
  TempDir tmp("manifest_rt");
  const kvscope::RunManifest m = sample();
  const fs::path p = tmp.path / "manifest.json";
  kvscope::write_manifest(m, p);
  CHECK_FALSE(fs::exists(tmp.path / "manifest.json.partial"));

  const std::string text = slurp(p);
  CHECK(text.rfind("{\n  \"config\": {\n    \"models\"", 0) == 0);  // 2-space pretty JSON
  CHECK(text.back() == '\n');

  const kvscope::RunManifest back = kvscope::read_manifest(p);
  CHECK(back.to_json() == m.to_json());
  CHECK(back.name == m.name);
  CHECK(back.inputs.size() == 2);
  CHECK(back.inputs[0].bytes == 1052876u);
  CHECK(back.inputs[0].sha256 == m.inputs[0].sha256);
  CHECK(back.git_dirty);
  CHECK(back.threads == 8);
  CHECK(back.wall_seconds == 12.375);
  CHECK(back.config["window"].is_number_integer());
  CHECK(back.extra["stages"]["load"] == 0.25);
  CHECK(back.outputs == m.outputs);
}

TEST_CASE("manifest: bad manifests name the file and field", "[infra][manifest]") {
  TempDir tmp("manifest_bad");
  json j = sample().to_json();
  j.erase("threads");
  CHECK_THROWS_WITH(kvscope::manifest_from_json(j, "m.json"),
                    Contains("m.json: manifest field 'threads' is missing"));
  j = sample().to_json();
  j["threads"] = "eight";
  CHECK_THROWS_WITH(kvscope::manifest_from_json(j, "m.json"),
                    Contains("manifest field 'threads' must be an integer, got string"));
  j = sample().to_json();
  j["inputs"][1].erase("sha256");
  CHECK_THROWS_WITH(kvscope::manifest_from_json(j, "m.json"),
                    Contains("m.json (inputs[1]): manifest field 'sha256' is missing"));

  std::ofstream(tmp.path / "broken.json") << "{\"name\": ";
  CHECK_THROWS_WITH(kvscope::read_manifest(tmp.path / "broken.json"),
                    Contains("broken.json: invalid JSON in manifest"));
  CHECK_THROWS_WITH(kvscope::read_manifest(tmp.path / "absent.json"),
                    Contains("absent.json") && Contains("No such file"));
}

// What git_info falls back to outside a checkout: the commit CMake wrote at configure time.
std::string build_commit() {
  std::ifstream f(KVSCOPE_BUILD_COMMIT_FILE);
  std::string c;
  std::getline(f, c);
  return is_hex40(c) ? c : "unknown";
}

TEST_CASE("manifest: git_info on the source tree and outside any repository", "[infra][manifest]") {
  const std::string fallback = build_commit();
  const kvscope::GitInfo g = kvscope::git_info(KVSCOPE_SOURCE_DIR);
  if (g.from_git) {
    CHECK(is_hex40(g.commit));
  } else {  // git missing, or a checkout without commits: the build-time value
    CHECK(g.commit == fallback);
    CHECK_FALSE(g.dirty);
  }

  TempDir tmp("manifest_nogit");
  kvscope::GitInfo none;
  REQUIRE_NOTHROW(none = kvscope::git_info(tmp.path));
  CHECK_FALSE(none.from_git);
  CHECK(none.commit == fallback);
  CHECK_FALSE(none.dirty);
  // A directory name that needs shell quoting must not break (or escape) the command.
  fs::create_directories(tmp.path / "it's here; echo x");
  CHECK(kvscope::git_info(tmp.path / "it's here; echo x").commit == fallback);
  CHECK(kvscope::git_info(tmp.path / "does_not_exist").commit == fallback);
}

TEST_CASE("manifest: time stamp, file records, start_manifest", "[infra][manifest]") {
  CHECK(std::regex_match(kvscope::utc_now_iso8601(),
                         std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  TempDir tmp("manifest_rec");
  std::ofstream(tmp.path / "abc.txt") << "abc";
  kvscope::FileRecord r = kvscope::file_record("text", tmp.path / "abc.txt");
  CHECK(r.role == "text");
  CHECK(r.bytes == 3);
  CHECK(r.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK_THROWS_WITH(kvscope::file_record("model", tmp.path / "missing.bin"),
                    Contains("missing.bin"));

  kvscope::RunManifest m = kvscope::start_manifest("x", "perplexity", KVSCOPE_SOURCE_DIR);
  CHECK(m.threads >= 1);
  CHECK(m.kvscope_version == KVSCOPE_VERSION);
  CHECK((m.git_source == "git" || m.git_source == "build"));
  CHECK(m.started_utc.size() == 20);
}
