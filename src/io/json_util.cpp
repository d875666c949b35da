#include "kvscope/io/json_util.hpp"

#include <cmath>
#include <vector>

#include "kvscope/io/error.hpp"

namespace kvscope {

using nlohmann::json;

int json_nesting(std::string_view text, int stop_at) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char ch : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (ch == '\\')
        escaped = true;
      else if (ch == '"')
        in_string = false;
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
           "real files nest a few levels)",
           source, max_depth);
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

namespace {

// A SAX handler that only follows where it is (a JSON pointer) and keeps float lexemes.
struct FloatTexts {
  struct Frame {
    bool array;
    size_t index;
    std::string key;
  };
  std::vector<Frame> stack;
  std::map<std::string, std::string> out;

  static std::string escape(const std::string& k) {  // RFC 6901: ~ -> ~0, / -> ~1
    std::string e;
    for (const char ch : k) e += ch == '~' ? "~0" : ch == '/' ? "~1" : std::string(1, ch);
    return e;
  }
  std::string here() const {
    std::string p;
    for (const Frame& f : stack) {
      p += '/';
      p += f.array ? std::to_string(f.index) : escape(f.key);
    }
    return p;
  }
  bool value() {  // a value ended: the next one of an array is one further on
    if (!stack.empty() && stack.back().array) ++stack.back().index;
    return true;
  }
  bool null() { return value(); }
  bool boolean(bool) { return value(); }
  bool number_integer(json::number_integer_t) { return value(); }
  bool number_unsigned(json::number_unsigned_t) { return value(); }
  bool number_float(json::number_float_t, const json::string_t& s) {
    out[here()] = s;
    return value();
  }
  bool string(json::string_t&) { return value(); }
  bool binary(json::binary_t&) { return value(); }
  bool start_object(std::size_t) {
    stack.push_back({false, 0, ""});
    return true;
  }
  bool key(json::string_t& k) {
    stack.back().key = k;
    return true;
  }
  bool end_object() {
    stack.pop_back();
    return value();
  }
  bool start_array(std::size_t) {
    stack.push_back({true, 0, ""});
    return true;
  }
  bool end_array() {
    stack.pop_back();
    return value();
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    return false;
  }
};

}  // namespace

std::map<std::string, std::string> json_float_texts(std::string_view text) {
  FloatTexts t;
  if (json_nesting(text, kMaxJsonDepth) > kMaxJsonDepth) return {};
  if (!json::sax_parse(text, &t)) return {};
  return std::move(t.out);
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
