#include "kvscope/io/json_util.hpp"

#include <cmath>

#include "kvscope/io/error.hpp"

namespace kvscope {

using nlohmann::json;

int json_nesting(std::string_view text, int stop_at) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char ch : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > deepest && (deepest = depth) > stop_at) return deepest;
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

json parse_json(std::string_view text, const std::string& source, int max_depth) {
  const int depth = json_nesting(text, max_depth);
  KV_CHECK(depth <= max_depth,
           "{}: JSON nested more than {} levels deep (arrays or objects inside each other; "
           "real files nest a few levels)", source, max_depth);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", source, e.what()));
  }
}

std::string json_brief(const json& v, size_t max_chars) {
  std::string s;
  if (v.is_number_float() && !std::isfinite(v.get<double>())) {
    const double d = v.get<double>();
    s = std::isnan(d) ? "nan" : d > 0 ? "inf" : "-inf";
  } else {
    s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

std::optional<int64_t> json_integer(const json& v, int64_t lo, int64_t hi) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (hi < 0 || u > uint64_t(hi) || (lo > 0 && u < uint64_t(lo))) return std::nullopt;
    return int64_t(u);
  }
  if (!v.is_number_integer()) return std::nullopt;
  const int64_t i = v.get<int64_t>();
  if (i < lo || i > hi) return std::nullopt;
  return i;
}

std::optional<double> json_finite(const json& v) {
  if (!v.is_number()) return std::nullopt;
  const double d = v.get<double>();
  if (!std::isfinite(d)) return std::nullopt;
  return d;
}

}  // namespace kvscope
