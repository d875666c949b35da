// UTF-8 validity, for text read from files (configs, tokenizer inputs).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace kvscope {

// Byte offset of the first invalid UTF-8 sequence (overlong, surrogate, > U+10FFFF and
// truncated sequences are invalid), or nullopt when `s` is valid.
std::optional<size_t> find_invalid_utf8(std::string_view s);

}  // namespace kvscope
