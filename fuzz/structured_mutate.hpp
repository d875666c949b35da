// Structure-aware mutations for the model-file targets. Byte flips rarely get a GGUF or
// safetensors file past its header checks, so the loaders' derived-size code (head sizes,
// row un-permutation, fused splits, offsets) went unreached. These mutations parse the
// input, change one field the way a lying or truncated converter would (a count, a size, a
// dim, a type, an offset, a JSON number or type), and write the file back valid in every
// other respect. Each target's LLVMFuzzerCustomMutator alternates them with libFuzzer's
// own byte-level mutations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

namespace kvscope::fuzz {

using Rng = std::mt19937;

// A JSON text with one value changed: a number replaced by an edge value (0, -1, 2^31,
// 2^32 + 2, 1e39, 2.9, ...), a value by another JSON type, a key removed or an array
// element dropped or repeated. nullopt when the text is not JSON.
std::optional<std::string> mutate_json(std::string_view text, Rng& rng);

// A GGUF file with one metadata value or one tensor info field changed (scalar values to
// edge values of their type, a value's type, a tensor's dims, ggml type or offset, an
// entry dropped). nullopt when the header does not parse.
std::optional<std::string> mutate_gguf(std::string_view bytes, Rng& rng);

// A safetensors file with one header field changed (shape, dtype, data_offsets, an entry
// dropped), the data kept. nullopt when the header does not parse.
std::optional<std::string> mutate_safetensors(std::string_view bytes, Rng& rng);

// For LLVMFuzzerCustomMutator: half the time `structured` (when it applies and fits
// max_size), else LLVMFuzzerMutate. Returns the new size.
size_t mutate_either(uint8_t* data, size_t size, size_t max_size, unsigned seed,
                     std::optional<std::string> (*structured)(std::string_view, Rng&));

}  // namespace kvscope::fuzz
