// Helpers shared by the tokenizer tests (tests/test_tokenizer*.cpp): where the data lives,
// the shipped texts, temp files, and a readable "first difference" for long strings.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

namespace kvscope::tok_test {

namespace fs = std::filesystem;

inline fs::path data_dir() {
  return KVSCOPE_TEST_DATA_DIR;
}
inline fs::path fixtures_dir() {
  return fs::path(KVSCOPE_TEST_FIXTURES_DIR) / "tokenizers";
}

inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("test data missing: " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct NamedText {
  std::string name;
  std::string text;
};

// Every shipped text: each .txt/.raw file whole, and the "text" field of every c4 document.
inline const std::vector<NamedText>& shipped_texts() {
  static const std::vector<NamedText> texts = [] {
    std::vector<NamedText> out;
    const fs::path text = data_dir() / "text";
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(text))
      if (e.is_regular_file() && (e.path().extension() == ".txt" || e.path().extension() == ".raw"))
        files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) out.push_back({fs::relative(f, text).string(), read_bytes(f)});
    std::ifstream c4(text / "c4" / "c4_sample.jsonl");
    std::string line;
    for (int i = 0; std::getline(c4, line); ++i)
      if (!line.empty())
        out.push_back({"c4/c4_sample.jsonl doc " + std::to_string(i),
                       nlohmann::json::parse(line).at("text").get<std::string>()});
    if (out.size() < 10) throw std::runtime_error("shipped texts missing under " + text.string());
    return out;
  }();
  return texts;
}

// `s` cut to at most `max_bytes`, backing off to a UTF-8 character boundary.
inline std::string utf8_head(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

// The shipped texts with each file cut to `max_bytes` and the c4 documents kept until they
// add up to `max_bytes`: every kind of text, at a fraction of the encoding time.
inline std::vector<NamedText> shipped_text_heads(size_t max_bytes) {
  std::vector<NamedText> out;
  size_t c4_bytes = 0;
  for (const NamedText& t : shipped_texts()) {
    if (t.name.rfind("c4/", 0) == 0) {
      if (c4_bytes >= max_bytes) continue;
      c4_bytes += t.text.size();
      out.push_back(t);
    } else {
      out.push_back({t.name, utf8_head(t.text, max_bytes)});
    }
  }
  return out;
}

// A fresh path in its own temp directory; the directories go when the test binary exits.
inline fs::path temp_path(const std::string& name) {
  struct Cleanup {
    std::vector<fs::path> dirs;
    ~Cleanup() {
      std::error_code ec;
      for (const fs::path& d : dirs) fs::remove_all(d, ec);
    }
  };
  static Cleanup cleanup;
  static std::atomic<int> counter{0};
  const fs::path dir =
      fs::temp_directory_path() /
      ("kvscope_tok_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  fs::create_directories(dir);
  cleanup.dirs.push_back(dir);
  return dir / name;
}

inline fs::path write_temp_file(const std::string& name, const std::string& bytes) {
  const fs::path p = temp_path(name);
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

// "" when equal, else where and how the strings first differ (full strings of a megabyte
// make useless assertion messages).
inline std::string first_difference(const std::string& expected, const std::string& got) {
  if (expected == got) return "";
  size_t i = 0;
  while (i < expected.size() && i < got.size() && expected[i] == got[i]) ++i;
  const size_t from = i > 40 ? i - 40 : 0;
  return "first difference at byte " + std::to_string(i) + " (sizes " +
         std::to_string(expected.size()) + " vs " + std::to_string(got.size()) + "): expected [" +
         expected.substr(from, 80) + "] got [" + got.substr(from, 80) + "]";
}

}  // namespace kvscope::tok_test
