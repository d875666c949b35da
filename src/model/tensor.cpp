#include "kvscope/model/tensor.hpp"

#include "kvscope/io/error.hpp"
#include "kvscope/io/mapped_file.hpp"

namespace kvscope {

const float* Tensor::f32() const {
  if (dtype != DType::F32 || row_order) return nullptr;
  if (reinterpret_cast<uintptr_t>(data) % alignof(float) != 0) return nullptr;
  return reinterpret_cast<const float*>(data);
}

void Tensor::rows_to_f32(int64_t r0, int64_t n, float* dst) const {
  KV_ASSERT(r0 >= 0 && n >= 0 && r0 + n <= rows);
  if (row_order) {
    for (int64_t r = 0; r < n; ++r)
      widen_to_f32(dtype, data + size_t((*row_order)[size_t(r0 + r)]) * row_bytes(), size_t(cols),
                   dst + size_t(r * cols));
    return;
  }
  widen_to_f32(dtype, data + size_t(r0) * row_bytes(), size_t(n * cols), dst);
}

std::vector<float> Tensor::to_f32() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  rows_to_f32(0, rows, out.data());
  return out;
}

void Tensor::release_pages() const {
  if (file) file->release(data, bytes());
}

void Tensor::populate_pages() const {
  if (file) file->populate(data, bytes());
}

Tensor row_view(const Tensor& t, int64_t r0, int64_t n, const std::string& what) {
  KV_CHECK(r0 >= 0 && n >= 0 && r0 + n <= t.rows, "tensor '{}': rows [{}, {}) asked of {}", t.name,
           r0, r0 + n, t.rows);
  KV_CHECK(!t.row_order, "tensor '{}': a row view of a row-reordered tensor", t.name);
  Tensor v = t;
  v.name = t.name + " (" + what + ")";
  v.rows = n;
  v.data = t.data + size_t(r0) * t.row_bytes();
  return v;
}

Tensor make_tensor(std::string name, int64_t rows, int64_t cols, std::vector<float> values) {
  KV_ASSERT(int64_t(values.size()) == rows * cols);
  auto buf = std::make_shared<std::vector<float>>(std::move(values));
  Tensor t;
  t.name = std::move(name);
  t.dtype = DType::F32;
  t.rows = rows;
  t.cols = cols;
  t.data = reinterpret_cast<const std::byte*>(buf->data());
  t.owner = buf;
  return t;
}

}  // namespace kvscope
