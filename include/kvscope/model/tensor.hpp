// A stored weight: a view into a memory-mapped file in the file's dtype, or owned
// float32 data (models built or edited in memory). Matrices are row-major [rows, cols]
// in the PyTorch convention [out, in]; vectors have rows == 1.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvscope/model/dtype.hpp"

namespace kvscope {

class MappedFile;

struct Tensor {
  std::string name;  // as in the checkpoint, for error messages
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const std::byte* data = nullptr;         // rows rows of row_bytes() each, any alignment
  std::shared_ptr<const void> owner;       // keeps the mapping or buffer alive
  std::shared_ptr<const MappedFile> file;  // set when `data` points into a mapping
  // Logical row r is stored row (*row_order)[r] (null: the identity). GGUF's llama
  // converter permutes the rows of W_Q and W_K; reading them through this order gives the
  // Hugging Face layout back without copying the mapped (quantized) bytes.
  std::shared_ptr<const std::vector<int32_t>> row_order;

  int64_t numel() const { return rows * cols; }
  size_t row_bytes() const { return kvscope::row_bytes(dtype, cols); }
  size_t bytes() const { return size_t(rows) * row_bytes(); }
  bool empty() const { return data == nullptr; }

  // Direct float32 pointer when no conversion is needed (F32, 4-byte aligned, rows in
  // order), else null.
  const float* f32() const;
  // Widen rows [r0, r0+n) into dst ([n, cols] floats).
  void rows_to_f32(int64_t r0, int64_t n, float* dst) const;
  // Widen everything into a new vector (an explicit deep copy).
  std::vector<float> to_f32() const;
  // Hand the mapped pages back to the kernel (no-op for owned tensors).
  void release_pages() const;
  // Maps a file-backed tensor's pages in ahead of use (MappedFile::populate); nothing for
  // tensors in memory.
  void populate_pages() const;
};

// Rows [r0, r0+n) of `t` as a tensor of its own (same dtype and mapping, no copy), named
// "<t.name> (<what>)". Fused checkpoint tensors (Phi-3's qkv_proj) are split this way.
Tensor row_view(const Tensor& t, int64_t r0, int64_t n, const std::string& what);

// Owned float32 tensor; `values` must hold rows*cols elements.
Tensor make_tensor(std::string name, int64_t rows, int64_t cols, std::vector<float> values);

}  // namespace kvscope
