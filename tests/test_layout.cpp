// The module map of docs/architecture.md, checked against the sources: every header lives
// in a module folder, every #include goes down the dependency order, and no source file
// outgrows a reader's patience.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// Which modules each module may include (itself always allowed). The order of
// docs/architecture.md: cli -> experiments -> kv, train, report -> runtime -> tokenizer ->
// model -> io.
const std::map<std::string, std::set<std::string>>& allowed() {
  static const std::map<std::string, std::set<std::string>> a = {
      {"io", {}},
      {"model", {"io"}},
      {"tokenizer", {"model", "io"}},  // the GGUF reader, for tokenizer.ggml.* metadata
      {"runtime", {"model", "tokenizer", "io"}},
      {"kv", {"runtime", "model", "tokenizer", "io"}},
      {"train", {"runtime", "model", "tokenizer", "io"}},
      {"report", {"runtime", "model", "tokenizer", "io"}},
      {"experiments", {"kv", "train", "report", "runtime", "model", "tokenizer", "io"}},
      {"cli", {"experiments", "kv", "train", "report", "runtime", "model", "tokenizer", "io"}},
  };
  return a;
}

struct SourceFile {
  fs::path path;
  std::string module;
};

// Every C++ file of the library and program with the module it belongs to.
std::vector<SourceFile> module_files(const fs::path& root) {
  std::vector<SourceFile> out;
  auto add_dir = [&](const fs::path& dir, const std::string& module) {
    if (!fs::is_directory(dir)) return;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) out.push_back({e.path(), module});
  };
  for (const auto& [module, _] : allowed()) {
    add_dir(root / "include" / "kvscope" / module, module);
    add_dir(root / "src" / module, module);
  }
  add_dir(root / "experiments", "experiments");
  return out;
}

std::vector<std::string> kvscope_includes(const fs::path& file) {
  static const std::regex re(R"re(^\s*#\s*include\s*"kvscope/([^"]+)")re");
  std::vector<std::string> out;
  std::ifstream in(file);
  std::string line;
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_search(line, m, re)) out.push_back(m[1]);
  return out;
}

size_t line_count(const fs::path& file) {
  std::ifstream in(file);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

}  // namespace

TEST_CASE("every public header lives in a module folder", "[layout]") {
  const fs::path inc = fs::path(KVSCOPE_SOURCE_DIR) / "include" / "kvscope";
  for (const auto& e : fs::directory_iterator(inc)) {
    INFO(e.path().string());
    CHECK(e.is_directory());
    CHECK(allowed().count(e.path().filename().string()) == 1);
  }
  const fs::path src = fs::path(KVSCOPE_SOURCE_DIR) / "src";
  for (const auto& e : fs::directory_iterator(src)) {
    INFO(e.path().string());
    CHECK(e.is_directory());
    CHECK(allowed().count(e.path().filename().string()) == 1);
  }
}

TEST_CASE("includes go one way down the module order", "[layout]") {
  const auto files = module_files(KVSCOPE_SOURCE_DIR);
  REQUIRE(files.size() > 50);
  size_t checked = 0;
  for (const auto& f : files) {
    for (const std::string& inc : kvscope_includes(f.path)) {
      const auto slash = inc.find('/');
      INFO(f.path.string() << " (module " << f.module << ") includes kvscope/" << inc);
      REQUIRE(slash != std::string::npos);  // kvscope/<module>/<header>
      const std::string target = inc.substr(0, slash);
      REQUIRE(allowed().count(target) == 1);
      CHECK((target == f.module || allowed().at(f.module).count(target) == 1));
      ++checked;
    }
  }
  CHECK(checked > 200);
}

TEST_CASE("no source file is over 800 lines", "[layout]") {
  const fs::path root = KVSCOPE_SOURCE_DIR;
  for (const char* dir : {"src", "include", "experiments", "tests", "bench"}) {
    for (const auto& e : fs::recursive_directory_iterator(root / dir)) {
      const auto ext = e.path().extension();
      if (!e.is_regular_file() || (ext != ".cpp" && ext != ".hpp")) continue;
      INFO(e.path().string());
      CHECK(line_count(e.path()) <= 800);
    }
  }
}
