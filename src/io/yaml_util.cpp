#include "kvscope/io/yaml_util.hpp"

#include <pwd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "kvscope/io/text_source.hpp"
#include "kvscope/io/utf8.hpp"

namespace kvscope {

namespace {

// yaml-cpp marks are 0-based with -1 for "no position"; messages use 1-based, 0 = unknown.
int line_of(const YAML::Node& n) {
  return n.Mark().line >= 0 ? n.Mark().line + 1 : 0;
}

std::string key_path_impl(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// Where a map sits, for messages: "in 'perplexity'" or "at the top level".
std::string where(const std::string& prefix) {
  return prefix.empty() ? "at the top level" : fmt::format("in '{}'", prefix);
}

// Quoted scalars carry the non-specific tag "!"; plain ones "?".
bool is_quoted(const YAML::Node& n) {
  return n.Tag() == "!";
}

// What a node is, for "got ..." in messages.
std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Scalar:
      return is_quoted(n) ? fmt::format("'{}' (a quoted string)", n.Scalar())
                          : fmt::format("'{}'", n.Scalar());
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Undefined:
      return "nothing";
  }
  return "?";
}

[[noreturn]] void type_error(const YAML::Node& n, const std::string& file, int line,
                             const std::string& key_path, const std::string& expected) {
  throw Error(fmt::format("{}: key '{}' must be {}, got {}", yaml_detail::location(file, line),
                          key_path, expected, describe(n)));
}

// A plain (unquoted) scalar's text; nullopt for quoted scalars, maps, lists and null.
std::optional<std::string> plain_scalar(const YAML::Node& n) {
  if (!n.IsScalar() || is_quoted(n)) return std::nullopt;
  return n.Scalar();
}

// Full-string decimal integer parse; '+' allowed. Leaves `out` unset on failure.
template <class I>
bool parse_int(std::string_view s, I& out) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size() && !s.empty();
}

bool parse_double(std::string_view s, double& out) {
  if (s == ".inf" || s == ".Inf" || s == ".INF" || s == "+.inf" || s == "+.Inf" || s == "+.INF") {
    out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (s == "-.inf" || s == "-.Inf" || s == "-.INF") {
    out = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") {
    out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size() && !s.empty();
}

bool parse_bool(std::string_view s, bool& out) {
  if (s == "true" || s == "True" || s == "TRUE") {
    out = true;
    return true;
  }
  if (s == "false" || s == "False" || s == "FALSE") {
    out = false;
    return true;
  }
  return false;
}

template <class T>
T convert_int(const YAML::Node& n, const std::string& file, int line, const std::string& path) {
  using Wide = std::conditional_t<std::is_signed_v<T>, long long, unsigned long long>;
  const char* kind = std::is_signed_v<T> ? "an integer" : "a non-negative integer";
  auto s = plain_scalar(n);
  if (!s) type_error(n, file, line, path, kind);
  Wide v{};
  if (!parse_int(*s, v)) {
    // Say "in [min, max]" only for a well-formed integer that does not fit, so the fix is
    // obvious; "-3" for an unsigned key is simply not a non-negative integer.
    std::string_view digits = *s;
    const bool negative = !digits.empty() && digits[0] == '-';
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) digits.remove_prefix(1);
    const bool overflow = !digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) {
      return c >= '0' && c <= '9';
    }) && !(negative && std::is_unsigned_v<T>);
    if (!overflow) type_error(n, file, line, path, kind);
    type_error(n, file, line, path,
               fmt::format("an integer in [{}, {}]", std::numeric_limits<T>::min(),
                           std::numeric_limits<T>::max()));
  }
  if (v < static_cast<Wide>(std::numeric_limits<T>::min()) ||
      v > static_cast<Wide>(std::numeric_limits<T>::max())) {
    type_error(n, file, line, path,
               fmt::format("an integer in [{}, {}]", std::numeric_limits<T>::min(),
                           std::numeric_limits<T>::max()));
  }
  return static_cast<T>(v);
}

}  // namespace

namespace yaml_detail {

std::string location(const std::string& file, int line) {
  return line > 0 ? fmt::format("{}:{}", file, line) : file;
}

template <class T>
T convert(const YAML::Node& n, const std::string& file, int line, const std::string& path) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (!n.IsScalar()) type_error(n, file, line, path, "a string");
    return n.Scalar();
  } else if constexpr (std::is_same_v<T, bool>) {
    auto s = plain_scalar(n);
    bool v = false;
    if (!s || !parse_bool(*s, v)) type_error(n, file, line, path, "a boolean (true or false)");
    return v;
  } else if constexpr (std::is_floating_point_v<T>) {
    auto s = plain_scalar(n);
    double v = 0;
    if (!s || !parse_double(*s, v)) type_error(n, file, line, path, "a number");
    // No key means anything by .inf or .nan: a NaN would pass every range check (all
    // comparisons are false) and run as a meaningless setting.
    if (!std::isfinite(v)) type_error(n, file, line, path, "a finite number");
    if (std::fabs(v) > std::numeric_limits<T>::max()) {
      type_error(n, file, line, path,
                 fmt::format("a number of magnitude <= {}", std::numeric_limits<T>::max()));
    }
    return static_cast<T>(v);
  } else {
    return convert_int<T>(n, file, line, path);
  }
}

#define KVSCOPE_INSTANTIATE(T) \
  template T convert<T>(const YAML::Node&, const std::string&, int, const std::string&);
KVSCOPE_INSTANTIATE(bool)
KVSCOPE_INSTANTIATE(int)
KVSCOPE_INSTANTIATE(long)
KVSCOPE_INSTANTIATE(long long)
KVSCOPE_INSTANTIATE(unsigned)
KVSCOPE_INSTANTIATE(unsigned long)
KVSCOPE_INSTANTIATE(unsigned long long)
KVSCOPE_INSTANTIATE(float)
KVSCOPE_INSTANTIATE(double)
KVSCOPE_INSTANTIATE(std::string)
#undef KVSCOPE_INSTANTIATE

}  // namespace yaml_detail

YAML::Node parse_yaml_string(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    // yaml-cpp's messages ("end of map not found") do not show the text; quote the line.
    std::string shown;
    if (e.mark.line >= 0) {
      std::istringstream lines(text);
      std::string l;
      for (int i = 0; i <= e.mark.line && std::getline(lines, l); ++i) {
        if (i == e.mark.line) shown = l;
      }
      if (!shown.empty() && shown.back() == '\r') shown.pop_back();
    }
    throw Error(fmt::format("{}:{}:{}: invalid YAML: {}{}", source, e.mark.line + 1,
                            e.mark.column + 1, e.msg,
                            shown.empty() ? "" : fmt::format(" (line: '{}')", shown)));
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}: invalid YAML: {}", source, e.what()));
  }
}

YAML::Node load_yaml_file(const std::filesystem::path& path) {
  // Bounded: a config is a few KB; a path naming /dev/zero or a huge file is refused
  // before it fills the memory.
  std::string text;
  try {
    text = read_file_bytes(path, kYamlReadLimit);
  } catch (const NotFoundError& e) {
    throw NotFoundError(fmt::format("YAML config {}", e.what()));
  } catch (const Error& e) {
    throw Error(fmt::format("YAML config {}", e.what()));
  }
  // YAML is Unicode text; a stray byte would otherwise reach file names and the manifest.
  if (const std::optional<size_t> bad = find_invalid_utf8(text)) {
    const size_t line = size_t(std::count(text.begin(), text.begin() + long(*bad), '\n')) + 1;
    throw Error(
        fmt::format("{}:{}: not valid UTF-8 text (byte {:#04x} at offset {}); a YAML "
                    "config must be UTF-8",
                    path.string(), line, static_cast<unsigned char>(text[*bad]), *bad));
  }
  return parse_yaml_string(text, path.string());
}

nlohmann::json yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& e : n) arr.push_back(yaml_to_json(e));
      return arr;
    }
    case YAML::NodeType::Map: {
      nlohmann::json obj = nlohmann::json::object();
      for (auto it = n.begin(); it != n.end(); ++it)
        obj[it->first.Scalar()] = yaml_to_json(it->second);
      return obj;
    }
    case YAML::NodeType::Scalar:
      break;
  }
  if (is_quoted(n)) return n.Scalar();
  const std::string& s = n.Scalar();
  long long i{};
  if (parse_int(s, i)) return i;
  bool b{};
  if (parse_bool(s, b)) return b;
  double d{};
  if (parse_double(s, d) && std::isfinite(d)) return d;
  return s;
}

// ---------------------------------------------------------------------------------------

struct YamlMap::State {
  YAML::Node node;
  std::string file;
  std::string prefix;
  int line = 0;  // 1-based line of the map, 0 = unknown
  struct Entry {
    std::string key;
    int line;  // 1-based line of the key
    YAML::Node value;
  };
  std::vector<Entry> entries;                     // file order
  std::unordered_map<std::string, size_t> index;  // key -> entries position
  std::vector<std::string> known;                 // keys asked for, in asking order
  std::vector<std::shared_ptr<State>> children;   // sub-maps handed out
};

YamlMap::YamlMap(std::shared_ptr<State> state) : s_(std::move(state)) {}

YamlMap::YamlMap(const YAML::Node& node, std::string file, std::string path_prefix) {
  auto s = std::make_shared<State>();
  s->file = std::move(file);
  s->prefix = std::move(path_prefix);
  s->line = line_of(node);
  if (!node.IsMap()) {
    if (s->prefix.empty()) {
      throw Error(fmt::format("{}: the top level must be a map of settings, got {}",
                              yaml_detail::location(s->file, s->line),
                              node.IsNull() ? "nothing (empty document?)" : describe(node)));
    }
    throw Error(fmt::format("{}: key '{}' must be a map, got {}",
                            yaml_detail::location(s->file, s->line), s->prefix, describe(node)));
  }
  s->node = node;
  for (auto it = node.begin(); it != node.end(); ++it) {
    // Copies, not references: yaml-cpp's iterator hands out a temporary pair proxy.
    const YAML::Node k = it->first;
    const YAML::Node v = it->second;
    int kline = line_of(k) ? line_of(k) : s->line;
    KV_CHECK(k.IsScalar(), "{}: keys must be plain names, got {} in '{}'",
             yaml_detail::location(s->file, kline), describe(k), s->prefix);
    const std::string& key = k.Scalar();
    auto [pos, fresh] = s->index.emplace(key, s->entries.size());
    // yaml-cpp keeps duplicate keys and lookups return the first; a second setting that
    // silently loses is exactly the kind of mistake this reader exists to catch.
    KV_CHECK(fresh, "{}: duplicate key '{}' (first set on line {})",
             yaml_detail::location(s->file, kline), key_path_impl(s->prefix, key),
             s->entries[pos->second].line);
    s->entries.push_back({key, kline, v});
  }
  s_ = std::move(s);
}

void YamlMap::remember(const std::string& key) {
  if (std::find(s_->known.begin(), s_->known.end(), key) == s_->known.end())
    s_->known.push_back(key);
}

bool YamlMap::has_entry(const std::string& key) {
  remember(key);
  return s_->index.count(key) != 0;
}

bool YamlMap::has(const std::string& key) {
  return has_entry(key);
}

const YAML::Node& YamlMap::require(const std::string& key) {
  remember(key);
  auto it = s_->index.find(key);
  KV_CHECK(it != s_->index.end(), "{}: missing required key '{}' {}",
           yaml_detail::location(s_->file, s_->line), key, where(s_->prefix));
  return s_->entries[it->second].value;
}

YAML::Node YamlMap::require_list(const std::string& key) {
  const YAML::Node& v = require(key);
  if (!v.IsSequence()) type_error(v, file(), key_line(key), key_path(key), "a list");
  return v;
}

std::filesystem::path YamlMap::get_path(const std::string& key) {
  const std::string v = get<std::string>(key);
  if (v.empty() || v[0] != '~') return v;
  const size_t slash = v.find('/');
  const std::string user = v.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
  const std::string rest = slash == std::string::npos ? "" : v.substr(slash + 1);
  std::string home;
  if (user.empty()) {
    const char* h = std::getenv("HOME");
    KV_CHECK(h != nullptr && *h != '\0',
             "{}: key '{}' = '{}' starts with '~', but HOME is not set to expand it",
             yaml_detail::location(file(), key_line(key)), key_path(key), v);
    home = h;
  } else {
    const struct passwd* pw = ::getpwnam(user.c_str());
    KV_CHECK(pw != nullptr && pw->pw_dir != nullptr,
             "{}: key '{}' = '{}': no user '{}' to expand '~{}' (write the path in full)",
             yaml_detail::location(file(), key_line(key)), key_path(key), v, user, user);
    home = pw->pw_dir;
  }
  return rest.empty() ? std::filesystem::path(home) : std::filesystem::path(home) / rest;
}

std::filesystem::path YamlMap::get_path_or(const std::string& key,
                                           const std::filesystem::path& fallback) {
  return has_entry(key) ? get_path(key) : fallback;
}

std::string YamlMap::get_choice(const std::string& key, const std::vector<std::string>& allowed) {
  std::string v = get<std::string>(key);
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "'" : ", '") + a + "'";
    throw Error(fmt::format("{}: key '{}' must be one of {}, got '{}'",
                            yaml_detail::location(file(), key_line(key)), key_path(key), list, v));
  }
  return v;
}

std::string YamlMap::get_choice_or(const std::string& key, const std::vector<std::string>& allowed,
                                   std::string fallback) {
  return has_entry(key) ? get_choice(key, allowed) : std::move(fallback);
}

YamlMap YamlMap::child(const YAML::Node& node, std::string prefix, int line) {
  if (!node.IsMap()) {
    throw Error(fmt::format("{}: key '{}' must be a map, got {}",
                            yaml_detail::location(s_->file, line), prefix, describe(node)));
  }
  YamlMap m(node, s_->file, std::move(prefix));
  // The line a reader looks for is the one naming the map ("experiment:"), not its first
  // entry (which is where yaml-cpp marks a block map).
  m.s_->line = line;
  s_->children.push_back(m.s_);
  return m;
}

YamlMap YamlMap::map(const std::string& key) {
  const YAML::Node& v = require(key);
  return child(v, key_path(key), key_line(key));
}

YamlMap YamlMap::map_or_empty(const std::string& key) {
  if (has_entry(key)) return map(key);
  auto s = std::make_shared<State>();
  s->file = s_->file;
  s->prefix = key_path(key);
  s->line = s_->line;
  return YamlMap(std::move(s));
}

std::vector<YamlMap> YamlMap::list_of_maps(const std::string& key) {
  const YAML::Node seq = require_list(key);  // const: a non-const [] may insert
  std::vector<YamlMap> out;
  out.reserve(seq.size());
  for (size_t i = 0; i < seq.size(); ++i) {
    int line = line_of(seq[i]) ? line_of(seq[i]) : key_line(key);
    out.push_back(child(seq[i], key_path(key) + "[" + std::to_string(i) + "]", line));
  }
  return out;
}

YAML::Node YamlMap::raw(const std::string& key) {
  return require(key);
}

void YamlMap::unknown_keys(std::vector<std::string>& out) const {
  for (const auto& e : s_->entries) {
    if (std::find(s_->known.begin(), s_->known.end(), e.key) != s_->known.end()) continue;
    std::string known;
    for (const auto& k : s_->known) known += (known.empty() ? "" : ", ") + k;
    out.push_back(fmt::format("{}: unknown key '{}' {} (known: {})",
                              yaml_detail::location(s_->file, e.line), e.key, where(s_->prefix),
                              known.empty() ? "none" : known));
  }
  for (const auto& c : s_->children) YamlMap(c).unknown_keys(out);
}

void YamlMap::finish() const {
  // Every unknown key of the file at once: fixing one typo should not reveal the next.
  std::vector<std::string> bad;
  unknown_keys(bad);
  if (bad.empty()) return;
  std::string msg = bad.front();
  if (bad.size() > 1) {
    msg = fmt::format("{} unknown keys: {}", bad.size(), bad.front());
    for (size_t i = 1; i < bad.size(); ++i) msg += "; " + bad[i];
  }
  throw Error(msg);
}

nlohmann::json YamlMap::to_json() const {
  return s_->node.IsDefined() && !s_->node.IsNull() ? yaml_to_json(s_->node)
                                                    : nlohmann::json::object();
}

const std::string& YamlMap::file() const {
  return s_->file;
}
const std::string& YamlMap::prefix() const {
  return s_->prefix;
}
int YamlMap::line() const {
  return s_->line;
}

int YamlMap::key_line(const std::string& key) const {
  auto it = s_->index.find(key);
  return it == s_->index.end() ? s_->line : s_->entries[it->second].line;
}

std::string YamlMap::key_path(const std::string& key) const {
  return key_path_impl(s_->prefix, key);
}

std::vector<std::string> YamlMap::keys() const {
  std::vector<std::string> out;
  for (const auto& e : s_->entries) out.push_back(e.key);
  return out;
}

std::vector<std::string> YamlMap::asked_keys() const {
  std::vector<std::string> out;
  for (const auto& k : s_->known) out.push_back(key_path(k));
  for (const auto& c : s_->children)
    for (std::string& k : YamlMap(c).asked_keys()) out.push_back(std::move(k));
  return out;
}

}  // namespace kvscope
