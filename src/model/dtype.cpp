#include "kvscope/model/dtype.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstdint>
#include <cstring>

#include "kvscope/io/error.hpp"

namespace kvscope {

namespace {

struct Info {
  const char* name;
  int64_t block;
  size_t bytes;
};

// Block sizes and bytes as ggml lays them out (ggml-common.h).
Info info(DType t) {
  switch (t) {
    case DType::F32:
      return {"F32", 1, 4};
    case DType::F16:
      return {"F16", 1, 2};
    case DType::BF16:
      return {"BF16", 1, 2};
    case DType::Q4_0:
      return {"Q4_0", 32, 18};
    case DType::Q4_1:
      return {"Q4_1", 32, 20};
    case DType::Q5_0:
      return {"Q5_0", 32, 22};
    case DType::Q5_1:
      return {"Q5_1", 32, 24};
    case DType::Q8_0:
      return {"Q8_0", 32, 34};
    case DType::Q2_K:
      return {"Q2_K", 256, 84};
    case DType::Q3_K:
      return {"Q3_K", 256, 110};
    case DType::Q4_K:
      return {"Q4_K", 256, 144};
    case DType::Q5_K:
      return {"Q5_K", 256, 176};
    case DType::Q6_K:
      return {"Q6_K", 256, 210};
    case DType::IQ4_NL:
      return {"IQ4_NL", 32, 18};
  }
  return {"?", 1, 0};
}

}  // namespace

std::string_view dtype_name(DType t) {
  return info(t).name;
}
int64_t dtype_block(DType t) {
  return info(t).block;
}
size_t dtype_block_bytes(DType t) {
  return info(t).bytes;
}
bool dtype_quantized(DType t) {
  return info(t).block > 1;
}

size_t dtype_size(DType t) {
  KV_ASSERT(!dtype_quantized(t));
  return info(t).bytes;
}

namespace {

#if defined(__x86_64__)
// BF16 -> f32 with AVX2, 8 at a time: each 16-bit value becomes the top half of a 32-bit
// one (the scalar loop below left this to the compiler's SSE2 code). Streaming stores
// were tried and measured slower: the GEMM reads the last-widened rows back from cache.
__attribute__((target("avx2"))) void widen_bf16_avx2(const std::byte* src, size_t n, float* dst) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = bf16_to_f32(h);
  }
}

bool have_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
#endif

}  // namespace

void widen_to_f32(DType t, const std::byte* src, size_t n, float* dst) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::BF16:
#if defined(__x86_64__)
      if (have_avx2()) return widen_bf16_avx2(src, n, dst);
#endif
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    default: {
      const int64_t b = dtype_block(t);
      KV_ASSERT(int64_t(n) % b == 0);
      dequantize_blocks(t, src, int64_t(n) / b, dst);
      return;
    }
  }
}

}  // namespace kvscope
