// JSON read from files kvscope did not write (config.json, tokenizer.json, safetensors
// headers, index files, manifests): parsed with a bound on nesting, so that code walking
// the value (recursive readers, dump(), comparisons) cannot overflow the stack, and read
// into numbers only when the value is exactly what the field needs -- an integer of JSON
// integer type within range, a finite number -- never truncated, wrapped or rounded
// silently.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace kvscope {

// Real files nest a few levels (tokenizer.json about 6); 64 is far above and far below
// what recursion over the value can take.
constexpr int kMaxJsonDepth = 64;

// The deepest nesting of arrays and objects in `text` (outside strings), counted without
// parsing. Stops counting (and returns) once it passes `stop_at`.
int json_nesting(std::string_view text, int stop_at = 1 << 30);

// Parses `text`; throws Error "SOURCE: not valid JSON: ..." or "SOURCE: JSON nested N
// levels deep (at most M)" before any deep value is built.
nlohmann::json parse_json(std::string_view text, const std::string& source,
                          int max_depth = kMaxJsonDepth);

// The value as written (dump()), cut to `max_chars` with "..." so a message stays a line.
// Non-finite floats, which dump() writes as null, are shown as nan / inf / -inf.
std::string json_brief(const nlohmann::json& v, size_t max_chars = 120);

// The text of every floating-point number in `text` as written ("1e39", "2.90"), by its
// JSON pointer ("/rms_norm_eps", "/rope_scaling/factor", "/eos_token_id/1"): a message can
// then quote a refused value exactly, where dump() would write 1e+39 or 2.9. Integers
// print as written anyway. Empty when `text` is not JSON.
std::map<std::string, std::string> json_float_texts(std::string_view text);

// v as an int64 when it is a JSON integer (not a boolean, not a float such as 2.0 or 2.9)
// in [lo, hi]; nullopt otherwise.
std::optional<int64_t> json_integer(const nlohmann::json& v, int64_t lo, int64_t hi);

// v as a double when it is a JSON number (integer or float, not a boolean) and finite.
std::optional<double> json_finite(const nlohmann::json& v);

}  // namespace kvscope
