#include "kvscope/io/text_source.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>

#include "kvscope/io/error.hpp"

namespace kvscope {

namespace {

// Removes CR/LF from both ends; the separator lines' own line ends belong to no document.
std::string strip_newlines(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == '\n' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == '\n' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

// Calls fn(line, line_no) for every line of `text` (without its '\n'; a CR stays), with
// 1-based numbers; fn returns false to stop early.
template <class Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  size_t pos = 0;
  size_t line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string_view::npos ? text.size() : nl;
    if (!fn(text.substr(pos, end - pos), ++line_no, pos, end)) return;
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
  }
}

std::vector<std::string> split_plain(const std::string& text, const std::string& sep,
                                     size_t max_docs) {
  std::vector<std::string> docs;
  size_t doc_start = 0;
  auto flush = [&](size_t doc_end) {
    std::string d = strip_newlines(std::string_view(text).substr(doc_start, doc_end - doc_start));
    if (!d.empty()) docs.push_back(std::move(d));
  };
  for_each_line(text, [&](std::string_view line, size_t, size_t begin, size_t end) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == sep) {
      flush(begin);
      doc_start = end;  // the line end after the separator is stripped with the document
      if (max_docs != 0 && docs.size() >= max_docs) return false;
    }
    return true;
  });
  if (max_docs == 0 || docs.size() < max_docs) flush(text.size());
  return docs;
}

const char* json_type(const nlohmann::json& j) {
  return j.type_name();
}

std::vector<std::string> split_jsonl(const std::string& text, const TextSpec& spec) {
  std::vector<std::string> docs;
  const std::string file = spec.path.string();
  for_each_line(text, [&](std::string_view line, size_t line_no, size_t, size_t) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) return true;  // blank
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(fmt::format("{}:{}: invalid JSON: {}", file, line_no, e.what()));
    }
    KV_CHECK(j.is_object(), "{}:{}: expected a JSON object per line, got {}", file, line_no,
             json_type(j));
    auto it = j.find(spec.jsonl_field);
    if (it == j.end()) {
      std::string fields;
      for (auto f = j.begin(); f != j.end(); ++f) fields += (fields.empty() ? "" : ", ") + f.key();
      throw Error(fmt::format("{}:{}: missing field '{}' (fields: {})", file, line_no,
                              spec.jsonl_field, fields.empty() ? "none" : fields));
    }
    KV_CHECK(it->is_string(), "{}:{}: field '{}' must be a string, got {}", file, line_no,
             spec.jsonl_field, json_type(*it));
    docs.push_back(it->get<std::string>());
    return spec.max_docs == 0 || docs.size() < spec.max_docs;
  });
  return docs;
}

// Reads a file in chunks that double in size, asking `enough(text)` after each whether the
// caller has what it needs; stops there, at the end of the file, or (with an Error) past
// `limit` bytes.
template <class Enough>
std::string read_prefix(const std::filesystem::path& path, size_t limit, Enough&& enough,
                        const char* hint, bool* cut = nullptr) {
  std::error_code ec;
  KV_CHECK(!std::filesystem::is_directory(path, ec), "cannot read '{}': is a directory",
           path.string());
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    int err = errno;
    throw_os_error(err, fmt::format("cannot read '{}': {}", path.string(), std::strerror(err)));
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(f, &std::fclose);
  std::string out;
  size_t chunk = size_t(1) << 16;
  for (;;) {
    const size_t old = out.size();
    out.resize(old + chunk);
    const size_t n = std::fread(out.data() + old, 1, chunk, f);
    out.resize(old + n);
    if (std::ferror(f)) {
      int err = errno;
      throw Error(fmt::format("cannot read '{}': {}", path.string(), std::strerror(err)));
    }
    if (n < chunk) break;  // end of file
    if (enough(out)) {
      if (cut != nullptr) *cut = true;
      break;
    }
    KV_CHECK(out.size() <= limit, "{}: gives more than {} bytes{}", path.string(), limit, hint);
    chunk = std::min(out.size(), limit + 1 - out.size());  // doubling, but not far past limit
  }
  KV_CHECK(out.size() <= limit, "{}: gives more than {} bytes{}", path.string(), limit, hint);
  return out;
}

}  // namespace

std::string read_file_bytes(const std::filesystem::path& path, size_t limit) {
  return read_prefix(
      path, limit, [](const std::string&) { return false; }, "");
}

const char* format_name(TextSpec::Format f) {
  return f == TextSpec::Plain ? "plain" : "jsonl";
}

size_t utf8_prefix_length(const std::string& s, size_t max) {
  if (max >= s.size()) return s.size();
  size_t n = max;
  // s[n] is the first byte left out; while it is a continuation byte (10xxxxxx) the cut
  // would split a character, so move the cut back to that character's lead byte.
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

namespace {

// Whether the documents split from `text` (a prefix of the file, read so far) already decide
// what load_documents keeps. Conservative: the last document may be cut by the read, so it
// counts for max_bytes (a part of it already too large is too large whole) but not as one
// of max_docs.
bool prefix_decides(const std::string& text, const TextSpec& spec) {
  if (spec.max_docs == 0 && spec.max_bytes == 0) return false;
  if (spec.format == TextSpec::Plain && spec.doc_separator.empty())
    return spec.max_bytes != 0 && text.size() > spec.max_bytes + 4;  // + a UTF-8 character
  const size_t nl = text.rfind('\n');
  if (nl == std::string::npos) return false;
  const std::string lines = text.substr(0, nl + 1);
  TextSpec all = spec;
  all.max_docs = 0;
  const std::vector<std::string> docs = spec.format == TextSpec::Jsonl
                                            ? split_jsonl(lines, all)
                                            : split_plain(lines, spec.doc_separator, 0);
  if (spec.max_docs != 0 && docs.size() > spec.max_docs) return true;
  if (spec.max_bytes != 0) {
    size_t total = 0;
    for (const std::string& d : docs) total += d.size();
    if (total > spec.max_bytes + 4) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> load_documents(const TextSpec& spec) {
  bool cut = false;
  std::string text = read_prefix(
      spec.path, spec.read_limit, [&](const std::string& t) { return prefix_decides(t, spec); },
      " before its documents reach max_docs / max_bytes; set max_bytes or max_docs for it", &cut);
  std::vector<std::string> docs;
  if (spec.format == TextSpec::Jsonl) {
    // A read stopped by max_docs / max_bytes may end inside a line, which no kept document
    // needs: drop it rather than report it as invalid JSON.
    if (cut) text.resize(text.rfind('\n') + 1);
    docs = split_jsonl(text, spec);
  } else if (spec.doc_separator.empty()) {
    if (!text.empty()) docs.push_back(std::move(text));
  } else {
    docs = split_plain(text, spec.doc_separator, spec.max_docs);
  }
  if (spec.max_docs != 0 && docs.size() > spec.max_docs) docs.resize(spec.max_docs);
  if (spec.max_bytes != 0) {
    size_t total = 0, keep = 0;
    while (keep < docs.size() && total + docs[keep].size() <= spec.max_bytes)
      total += docs[keep++].size();
    if (keep == 0 && !docs.empty()) {
      docs[0].resize(utf8_prefix_length(docs[0], spec.max_bytes));
      keep = docs[0].empty() ? 0 : 1;  // max_bytes below one character: nothing fits
    }
    docs.resize(keep);
  }
  return docs;
}

}  // namespace kvscope
