// Strict YAML -> typed values. Every error names the file, the 1-based line and the
// dotted key path; unknown keys (typos) are errors, not silently ignored settings.
//
//   YAML::Node root = load_yaml_file(path);
//   YamlMap top(root, path.string());
//   auto ppl = top.map("perplexity");
//   int window = ppl.get_at_least<int>("window", 1);
//   int stride = ppl.get_or<int>("stride", window);
//   top.finish();   // throws for the first key nobody read, in this map or any sub-map
//
// Scalars are converted by kvscope, not by yaml-cpp's lenient as<T>(): integers are plain
// decimal (no "1.0", no quoted "12"), booleans are true/false only (YAML 1.1's yes/no/on/off
// are a classic source of silent surprises), numbers accept ints, decimals, exponents and
// .inf/.nan. Strings accept any scalar. An explicit null ("key:" or "key: ~") is an error
// for every type.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "kvscope/io/error.hpp"

namespace kvscope {

// Configs are small: a file (or endless stream) longer than this is refused.
constexpr size_t kYamlReadLimit = size_t(16) << 20;

// Parses a YAML file. Throws Error naming the file when it cannot be read, is longer than
// kYamlReadLimit or is not UTF-8, and "FILE:LINE:COL: invalid YAML: MSG (line: 'TEXT')"
// (1-based) when yaml-cpp rejects it.
YAML::Node load_yaml_file(const std::filesystem::path& path);

// Same for text in memory; `source` is the name used in messages.
YAML::Node parse_yaml_string(const std::string& text, const std::string& source);

// A node as JSON, for manifests: plain scalars that read as integers stay integers,
// decimals become doubles, true/false become bools, null becomes null, everything else
// (quoted scalars included, and .inf/.nan, which JSON cannot hold) becomes a string.
nlohmann::json yaml_to_json(const YAML::Node& node);

// The scalar types YamlMap::get and list accept.
template <class T>
inline constexpr bool is_yaml_scalar_v =
    std::is_same_v<T, bool> || std::is_same_v<T, int> || std::is_same_v<T, long> ||
    std::is_same_v<T, long long> || std::is_same_v<T, unsigned> ||
    std::is_same_v<T, unsigned long> || std::is_same_v<T, unsigned long long> ||
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::string>;

namespace yaml_detail {
// Converts one scalar node strictly; `line` (1-based, 0 = unknown) and `key_path` are for
// the message. Defined in yaml_util.cpp for every type in is_yaml_scalar_v.
template <class T>
T convert(const YAML::Node& node, const std::string& file, int line, const std::string& key_path);
// "FILE:LINE" or "FILE" when the line is unknown (0).
std::string location(const std::string& file, int line);
}  // namespace yaml_detail

// A reader over one YAML map that records which keys were read. Copies share the record,
// so a YamlMap can be passed by value. Sub-maps obtained through map()/list_of_maps() are
// remembered, and finish() on a map checks it and all of them.
class YamlMap {
 public:
  // `node` must be a map. `file` names the source in messages; `path_prefix` is the dotted
  // path of this map ("" for the top level), e.g. "perplexity" or "models[2]".
  YamlMap(const YAML::Node& node, std::string file, std::string path_prefix = "");

  // Whether `key` is present (an explicit null counts as present, and get() then rejects
  // it). Records `key` as known.
  bool has(const std::string& key);

  // Required scalar; throws when missing, null or of the wrong type.
  template <class T>
  T get(const std::string& key) {
    static_assert(is_yaml_scalar_v<T>, "YamlMap::get: unsupported type");
    return yaml_detail::convert<T>(require(key), file(), key_line(key), key_path(key));
  }

  // Optional scalar: `fallback` when absent; a present value is checked like get().
  template <class T>
  T get_or(const std::string& key, T fallback) {
    return has_entry(key) ? get<T>(key) : fallback;
  }

  template <class T>
  std::optional<T> get_opt(const std::string& key) {
    if (!has_entry(key)) return std::nullopt;
    return get<T>(key);
  }

  // Numeric value that must be >= `min` (e.g. 0 for counts, 1 for window sizes).
  template <class T>
  T get_at_least(const std::string& key, T min) {
    T v = get<T>(key);
    KV_CHECK(!(v < min), "{}: key '{}' must be >= {}, got {}",
             yaml_detail::location(file(), key_line(key)), key_path(key), min, v);
    return v;
  }

  template <class T>
  T get_at_least_or(const std::string& key, T min, T fallback) {
    return has_entry(key) ? get_at_least<T>(key, min) : fallback;
  }

  // A file or directory path: a leading `~` or `~/` is the home directory ($HOME) and
  // `~user/` that user's, as a shell expands them; the rest is used as written (relative
  // paths are relative to the working directory). An empty string stays empty.
  std::filesystem::path get_path(const std::string& key);
  std::filesystem::path get_path_or(const std::string& key, const std::filesystem::path& fallback);

  // String that must be one of `allowed`: "... must be one of 'a', 'b', got 'c'".
  std::string get_choice(const std::string& key, const std::vector<std::string>& allowed);
  std::string get_choice_or(const std::string& key, const std::vector<std::string>& allowed,
                            std::string fallback);

  // Required sub-map (a list or scalar here is an error).
  YamlMap map(const std::string& key);
  // Sub-map, or an empty map when the key is absent, so get_or defaults apply.
  YamlMap map_or_empty(const std::string& key);
  // Required list whose elements are all maps, each with path "key[i]".
  std::vector<YamlMap> list_of_maps(const std::string& key);

  // Required list of scalars; an element of the wrong type names "key[i]" and its line.
  template <class T>
  std::vector<T> list(const std::string& key) {
    static_assert(is_yaml_scalar_v<T>, "YamlMap::list: unsupported type");
    const YAML::Node seq = require_list(key);  // const: a non-const [] may insert
    std::vector<T> out;
    out.reserve(seq.size());
    for (size_t i = 0; i < seq.size(); ++i) {
      int line = seq[i].Mark().line >= 0 ? seq[i].Mark().line + 1 : key_line(key);
      out.push_back(yaml_detail::convert<T>(seq[i], file(), line,
                                            key_path(key) + "[" + std::to_string(i) + "]"));
    }
    return out;
  }

  template <class T>
  std::vector<T> list_or(const std::string& key, std::vector<T> fallback) {
    return has_entry(key) ? list<T>(key) : std::move(fallback);
  }

  // The raw value of a required key; the whole subtree counts as read (for free-form
  // sections copied into manifests, e.g. with yaml_to_json).
  YAML::Node raw(const std::string& key);

  // Throws when a key was never asked for, here or in any sub-map: "FILE:LINE: unknown key
  // 'strde' in 'perplexity' (known: window, stride)"; several are all named in one message
  // ("2 unknown keys: ...; ...").
  void finish() const;
  // The message of each unknown key here, then in every sub-map handed out.
  void unknown_keys(std::vector<std::string>& out) const;

  // This map as JSON (reads nothing, marks nothing).
  nlohmann::json to_json() const;

  const std::string& file() const;
  const std::string& prefix() const;
  int line() const;                                    // 1-based line of the map, 0 = unknown
  int key_line(const std::string& key) const;          // line of `key`, else of the map
  std::string key_path(const std::string& key) const;  // "perplexity.window"
  std::vector<std::string> keys() const;               // keys present, in file order
  // Dotted paths of every key asked for so far (present or not), here and in every sub-map
  // handed out: the keys the parser accepts, e.g. "perplexity.window", "models[0].path".
  std::vector<std::string> asked_keys() const;

 private:
  struct State;
  explicit YamlMap(std::shared_ptr<State> state);
  void remember(const std::string& key);              // records `key` as known
  bool has_entry(const std::string& key);             // present; records `key` as known
  const YAML::Node& require(const std::string& key);  // present; records; throws if missing
  YAML::Node require_list(const std::string& key);
  YamlMap child(const YAML::Node& node, std::string prefix, int line);

  std::shared_ptr<State> s_;
};

}  // namespace kvscope
