// The safetensors container: u64 little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then data.
// Offsets are relative to the end of the header.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvscope/model/tensor.hpp"

namespace kvscope {

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  Tensor tensor;  // a view into the mapping; rows = product of all but the last dim
};

struct SafetensorsFile {
  std::filesystem::path path;
  std::shared_ptr<const MappedFile> file;
  std::map<std::string, std::string> metadata;
  std::map<std::string, SafetensorsEntry> tensors;
};

// Maps the file and validates the header (length, JSON, every dtype, shape and offset)
// before any tensor data is read. Throws Error naming the file and tensor.
SafetensorsFile open_safetensors(const std::filesystem::path& path);

// Streaming writer (for synthetic checkpoints and trained models): declare every tensor
// first, then write() their data in the declared order. Output goes to PATH.partial
// and is renamed to PATH by finish().
struct SafetensorsSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::filesystem::path path, std::vector<SafetensorsSpec> specs,
                    std::map<std::string, std::string> metadata = {});
  ~SafetensorsWriter();
  // Appends the next tensor's raw bytes (may be called several times per tensor).
  void write(const void* bytes, size_t n);
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvscope
