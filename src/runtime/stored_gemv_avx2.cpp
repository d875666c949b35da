// AVX2 row dot products of stored weights. Every function carries its target attribute
// (not a file-wide -mavx2), so no AVX2 code reaches code the portable path shares.
#include "stored_gemv_avx2.hpp"

#if defined(__x86_64__) || defined(__i386__)

#include <cpuid.h>
#include <immintrin.h>

#include <cstring>

#include "kvscope/model/dtype.hpp"

#define KV_AVX2 __attribute__((target("avx2,fma")))
#define KV_AVX2_F16C __attribute__((target("avx2,fma,f16c")))

namespace kvscope::stored_avx2 {

namespace {

KV_AVX2 inline float hsum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

uint16_t u16_at(const std::byte* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// 8 lanes of int32 = the pairwise products of 32 int8 w and x summed in groups of 4.
// |w| goes in as unsigned (so -128 stays 128) and x takes w's sign; x is in [-127, 127]
// (quantized by prepare_activation), so no product pair reaches int16's limit.
KV_AVX2 inline __m256i dot32_i8(__m256i w, __m256i x) {
  const __m256i aw = _mm256_sign_epi8(w, w);
  const __m256i sx = _mm256_sign_epi8(x, w);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1));
}

// 8 BF16 values widened: each is the high half of its float.
KV_AVX2 inline __m256 widen8(const std::byte* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

}  // namespace

bool supported() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports has no "f16c".
bool supported_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return supported() && __get_cpuid(1, &a, &b, &c, &d) != 0 && ((c >> 29) & 1u) != 0;
}

KV_AVX2 float dot_f32(const std::byte* w, const float* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const float* wf = reinterpret_cast<const float*>(w);  // loadu: any alignment
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(wf + i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(wf + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
  }
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) {
    float v;
    std::memcpy(&v, w + 4 * i, 4);
    s += v * x[i];
  }
  return s;
}

KV_AVX2 float dot_bf16(const std::byte* w, const float* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(widen8(w + 2 * i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(widen8(w + 2 * i + 16), _mm256_loadu_ps(x + i + 8), acc1);
  }
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += bf16_to_f32(u16_at(w + 2 * i)) * x[i];
  return s;
}

KV_AVX2_F16C float dot_f16(const std::byte* w, const float* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2 * i)));
    const __m256 w1 =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2 * i + 16)));
    acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc1);
  }
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += f16_to_f32(u16_at(w + 2 * i)) * x[i];
  return s;
}

// Q8_0 block: [d f16][32 x int8] (34 bytes).
KV_AVX2 float dot_q8_0(const std::byte* row, const int8_t* qx, const float* dx, int64_t blocks) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const std::byte* blk = row + 34 * b;
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + 32 * b));
    const __m256 d = _mm256_set1_ps(f16_to_f32(u16_at(blk)) * dx[b]);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32_i8(w, x)), d, acc);
  }
  return hsum(acc);
}

// Q4_0 block: [d f16][16 bytes]: byte j holds element j (low nibble) and j + 16 (high),
// each q - 8 (18 bytes).
KV_AVX2 float dot_q4_0(const std::byte* row, const int8_t* qx, const float* dx, int64_t blocks) {
  __m256 acc = _mm256_setzero_ps();
  const __m128i low4 = _mm_set1_epi8(15);
  for (int64_t b = 0; b < blocks; ++b) {
    const std::byte* blk = row + 18 * b;
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i lo = _mm_and_si128(q, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    const __m256i w = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + 32 * b));
    const __m256 d = _mm256_set1_ps(f16_to_f32(u16_at(blk)) * dx[b]);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32_i8(w, x)), d, acc);
  }
  return hsum(acc);
}

}  // namespace kvscope::stored_avx2

#else  // not x86: the portable path only

namespace kvscope::stored_avx2 {
bool supported() {
  return false;
}
bool supported_f16c() {
  return false;
}
float dot_f32(const std::byte*, const float*, int64_t) {
  return 0;
}
float dot_bf16(const std::byte*, const float*, int64_t) {
  return 0;
}
float dot_f16(const std::byte*, const float*, int64_t) {
  return 0;
}
float dot_q8_0(const std::byte*, const int8_t*, const float*, int64_t) {
  return 0;
}
float dot_q4_0(const std::byte*, const int8_t*, const float*, int64_t) {
  return 0;
}
}  // namespace kvscope::stored_avx2

#endif
