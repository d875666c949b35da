// GGUF (ggml's model file, v2 and v3; spec: ggml docs/gguf.md): little-endian header
// "GGUF", version, tensor count, metadata count; typed metadata key/values (nested arrays
// allowed); tensor infos (name, dims with ne0 innermost, ggml type, offset); data section
// at `general.alignment` (default 32). Every size, count and offset is checked against the
// file before use: a lying header gets an Error naming the field, never a read past the map.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kvscope/model/tensor.hpp"

namespace kvscope {

struct GgufTensor {
  std::string name;
  uint32_t ggml_type = 0;
  std::vector<int64_t> dims;  // ne0 (contiguous, = Tensor::cols) first
  uint64_t offset = 0;        // within the data section
  Tensor tensor;              // [product of dims[1..], dims[0]], mapped in its stored type
};

struct GgufFile {
  std::filesystem::path path;
  std::shared_ptr<const MappedFile> file;
  uint32_t version = 0;
  uint64_t alignment = 32;
  nlohmann::json metadata = nlohmann::json::object();  // key -> value (arrays as arrays)
  std::map<std::string, std::string> metadata_type;    // key -> "u32", "str", "arr[str]"...
  std::vector<GgufTensor> tensors;                     // in file order
  std::map<std::string, size_t> index;                 // name -> position in `tensors`

  const GgufTensor* find(const std::string& name) const;
};

// Maps and validates the whole header. Tensor types outside DType are refused by their
// ggml name (e.g. "IQ2_XXS"), with the tensor's name.
GgufFile open_gguf(const std::filesystem::path& path);

// The DType of a ggml type id, or throws naming the type (and `where`).
DType dtype_from_ggml(uint32_t ggml_type, const std::string& where);
// ggml's name of a type id ("Q4_K", "IQ2_XXS", "type 99" when unknown).
std::string ggml_type_name(uint32_t ggml_type);

}  // namespace kvscope
