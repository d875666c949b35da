// AVX2 row dot products of stored weights. Every function carries its target attribute
// (not a file-wide -mavx2), so no AVX2 code reaches code the portable path shares.
#include "stored_gemv_avx2.hpp"

#if defined(__x86_64__) || defined(__i386__)

#include <cpuid.h>
#include <immintrin.h>

#include <cstring>

#include "kvscope/model/block_levels.hpp"

#define KV_AVX2 __attribute__((target("avx2,fma")))
#define KV_AVX2_F16C __attribute__((target("avx2,fma,f16c")))

namespace kvscope::stored_avx2 {

namespace {

// How far ahead of the row being read the kernels ask for lines: rows stream from memory
// and the hardware prefetcher stops at each 4 KiB page, so without it the first touch of
// each block waits for memory (decoding a Q4_K_M 7B: 2.8-3.4 tok/s without, 3.9-4.7 with
// 1-3 KiB; 2 cores).
constexpr size_t kAhead = 1536;

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
// Asked once: CPUID is serializing, and a trap to the hypervisor in a virtual machine.
bool supported_f16c() {
  static const bool yes = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return supported() && __get_cpuid(1, &a, &b, &c, &d) != 0 && ((c >> 29) & 1u) != 0;
  }();
  return yes;
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

// 64 bytes (one line) per step, the line kAhead bytes on asked for.
KV_AVX2 float dot_bf16(const std::byte* w, const float* x, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(),
         acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(w + 2 * i) + kAhead, _MM_HINT_T0);
    acc0 = _mm256_fmadd_ps(widen8(w + 2 * i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(widen8(w + 2 * i + 16), _mm256_loadu_ps(x + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(widen8(w + 2 * i + 32), _mm256_loadu_ps(x + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(widen8(w + 2 * i + 48), _mm256_loadu_ps(x + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8)
    acc0 = _mm256_fmadd_ps(widen8(w + 2 * i), _mm256_loadu_ps(x + i), acc0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
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

// The block kernels. Each block's integer sum is exact (bounds beside each); one float
// step per block (or per 32 for the legacy types), as the portable dot_levels.

namespace {

using u8 = uint8_t;

KV_AVX2_F16C inline __m256i load32(const u8* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
KV_AVX2_F16C inline __m256i load32(const int8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// 32 bytes of 4-bit levels from 16 packed bytes: element j the low nibble of byte j,
// element j + 16 its high nibble (the legacy types' order).
KV_AVX2_F16C inline __m256i nibbles32(const u8* p) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i low4 = _mm_set1_epi8(15);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), low4), _mm_and_si128(q, low4));
}

// Byte i = 16 where bit i of the 32-bit word at p is set, else 0 (Q5's fifth bits).
KV_AVX2_F16C inline __m256i fifth_bits(const u8* p) {
  uint32_t qh;
  std::memcpy(&qh, p, 4);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(qh)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(16));
}

// 8 int32 lanes: pairs of unsigned levels u (< 64) times x, times a 16-bit scale per lane.
KV_AVX2_F16C inline __m256i udot(__m256i u, __m256i x, __m256i scale16) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), scale16);
}

// The same for signed levels w (|w| <= 128 reaches maddubs as |w|, x takes w's sign).
KV_AVX2_F16C inline __m256i sdot(__m256i w, __m256i x, __m256i scale16) {
  return udot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w), scale16);
}

// Asks for the lines of the block kAhead bytes on.
KV_AVX2_F16C inline void prefetch_block(const u8* blk, size_t bb) {
  for (size_t o = 0; o < bb; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(blk + kAhead + o), _MM_HINT_T0);
}

KV_AVX2_F16C inline float half_f(const u8* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// 8 int16 scales (from 8 bytes, signed or not) in both 128-bit lanes, for the shuffles below.
KV_AVX2_F16C inline __m256i scales8(const void* p, bool is_signed) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_broadcastsi128_si256(is_signed ? _mm_cvtepi8_epi16(b) : _mm_cvtepu8_epi16(b));
}

// Word j of s8 in every lane (a scale for 32 elements).
KV_AVX2_F16C inline __m256i word(__m256i s8, int j) {
  return _mm256_shuffle_epi8(s8, _mm256_set1_epi16(int16_t(((2 * j + 1) << 8) | (2 * j))));
}

// Word 2k of s8 for the first 16 elements, word 2k + 1 for the last 16 (groups of 16).
KV_AVX2_F16C inline __m256i pair(__m256i s8, int k) {
  return _mm256_shuffle_epi8(
      s8, _mm256_set_m128i(_mm_set1_epi16(int16_t(((4 * k + 3) << 8) | (4 * k + 2))),
                           _mm_set1_epi16(int16_t(((4 * k + 1) << 8) | (4 * k)))));
}

// Legacy blocks of 32 with signed levels: Q8_0 [d][32 int8], Q4_0 [d][16 nibbles] (q - 8),
// Q5_0 [d][qh u32][16 nibbles] (q - 16), IQ4_NL [d][16 nibbles] (table levels).
template <DType T>
KV_AVX2_F16C float dot_signed32(const std::byte* row, const int8_t* qx, const float* dx,
                                const int16_t*, int64_t blocks) {
  constexpr size_t bb = T == DType::Q8_0 ? 34 : T == DType::Q5_0 ? 22 : 18;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlLevels)));
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const u8* blk = reinterpret_cast<const u8*>(row) + bb * size_t(b);
    if (b % 2 == 0) prefetch_block(blk, 2 * bb);  // two blocks of 34 bytes or less: ~1 line
    __m256i w;
    if constexpr (T == DType::Q8_0)
      w = load32(blk + 2);
    else if constexpr (T == DType::Q4_0)
      w = _mm256_sub_epi8(nibbles32(blk + 2), _mm256_set1_epi8(8));
    else if constexpr (T == DType::Q5_0)
      w = _mm256_sub_epi8(_mm256_or_si256(nibbles32(blk + 6), fifth_bits(blk + 2)),
                          _mm256_set1_epi8(16));
    else
      w = _mm256_shuffle_epi8(table, nibbles32(blk + 2));
    const __m256i p = sdot(w, load32(qx + 32 * b), ones);  // |p| <= 8 * 128 * 127
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(half_f(blk) * dx[b]), acc);
  }
  return hsum(acc);
}

// Legacy blocks of 32 with a min: Q4_1 [d][m][16 nibbles], Q5_1 [d][m][qh][16 nibbles];
// x = d q + m, so the row's sum gains m dx (sum of the block's int8 x).
template <DType T>
KV_AVX2_F16C float dot_min32(const std::byte* row, const int8_t* qx, const float* dx,
                             const int16_t* sum16, int64_t blocks) {
  constexpr size_t bb = T == DType::Q4_1 ? 20 : 24;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc = _mm256_setzero_ps();
  float mins = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    const u8* blk = reinterpret_cast<const u8*>(row) + bb * size_t(b);
    if (b % 2 == 0) prefetch_block(blk, 2 * bb);  // two blocks of 34 bytes or less: ~1 line
    __m256i u;
    if constexpr (T == DType::Q4_1)
      u = nibbles32(blk + 4);
    else
      u = _mm256_or_si256(nibbles32(blk + 8), fifth_bits(blk + 4));
    const __m256i p = udot(u, load32(qx + 32 * b), ones);  // |p| <= 8 * 31 * 127
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(half_f(blk) * dx[b]), acc);
    mins += half_f(blk + 2) * dx[b] * float(sum16[2 * b] + sum16[2 * b + 1]);
  }
  return hsum(acc) + mins;
}

// Q2_K [scales 16][qs 64][d][dmin] (quant.cpp): per half of 128, 32 bytes of qs read four
// times two bits at a time; group g's scale is the low nibble of scales[g], its min the
// high nibble. Integer sum <= 256 * 3 * 127 * 15.
KV_AVX2_F16C float dot_q2_k(const std::byte* row, const int8_t* qx, const float* dx,
                            const int16_t* sum16, int64_t blocks) {
  const __m256i three = _mm256_set1_epi8(3);
  const __m128i low4 = _mm_set1_epi8(15);
  __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const u8* blk = reinterpret_cast<const u8*>(row) + 84 * size_t(b);
    prefetch_block(blk, 84);
    const int8_t* x = qx + 256 * b;
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk));
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), low4));
    const __m256i s16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sum16 + 16 * b));
    acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mins, s16)),
                              _mm256_set1_ps(half_f(blk + 82) * dx[b]), acc_min);
    const __m128i sc = _mm_and_si128(packed, low4);
    __m256i sumi = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      const __m256i s8 =
          _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(half == 0 ? sc : _mm_srli_si128(sc, 8)));
      __m256i q2 = load32(blk + 16 + 32 * half);
      for (int pass = 0; pass < 4; ++pass) {
        const __m256i q = _mm256_and_si256(q2, three);
        q2 = _mm256_srli_epi16(q2, 2);
        sumi = _mm256_add_epi32(sumi, udot(q, load32(x + 128 * half + 32 * pass), pair(s8, pass)));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(half_f(blk + 80) * dx[b]), acc);
  }
  return hsum(_mm256_sub_ps(acc, acc_min));
}

// Q3_K [hmask 32][qs 64][scales 12][d]: levels (two bits) + 4 (hmask bit) - 4, bit
// `pass + 4 half` of hmask taken by shifting it one bit per pass. Signed scales in
// [-32, 31]; integer sum <= 256 * 4 * 127 * 32.
KV_AVX2_F16C float dot_q3_k(const std::byte* row, const int8_t* qx, const float* dx, const int16_t*,
                            int64_t blocks) {
  const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const u8* blk = reinterpret_cast<const u8*>(row) + 110 * size_t(b);
    prefetch_block(blk, 110);
    const int8_t* x = qx + 256 * b;
    int8_t sc[16];
    q3_k_scales(blk + 96, sc);
    __m256i hm = load32(blk);
    __m256i sumi = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      const __m256i s8 = scales8(sc + 8 * half, true);
      __m256i q2 = load32(blk + 32 + 32 * half);
      for (int pass = 0; pass < 4; ++pass) {
        const __m256i high = _mm256_slli_epi16(_mm256_and_si256(hm, one), 2);
        hm = _mm256_srli_epi16(hm, 1);
        const __m256i w = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(q2, three), high), four);
        q2 = _mm256_srli_epi16(q2, 2);
        sumi = _mm256_add_epi32(sumi, sdot(w, load32(x + 128 * half + 32 * pass), pair(s8, pass)));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(half_f(blk + 108) * dx[b]), acc);
  }
  return hsum(acc);
}

// Q4_K [d][dmin][scales 12][qs 128] / Q5_K [d][dmin][scales 12][qh 32][qs 128]: per 64
// elements, 32 bytes of qs (low nibbles: group 2c, high: 2c + 1); Q5_K's fifth bit of
// group g is bit g of qh, taken by shifting qh two bits per 64. x = d sc q - dmin mn.
// Integer sum <= 256 * 31 * 127 * 63.
template <bool Five>
KV_AVX2_F16C float dot_q45_k(const std::byte* row, const int8_t* qx, const float* dx,
                             const int16_t* sum16, int64_t blocks) {
  constexpr size_t bb = Five ? 176 : 144;
  const __m256i low4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
  // Shuffle that doubles 8 bytes m0..m7 into m0 m0 m1 m1 ... m7 m7 (a min per 16 sums).
  const __m128i twice = _mm_set_epi8(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const u8* blk = reinterpret_cast<const u8*>(row) + bb * size_t(b);
    prefetch_block(blk, bb);
    const int8_t* x = qx + 256 * b;
    alignas(8) uint8_t sc[8], mn[8];
    k4_scales_mins(blk + 4, sc, mn);
    // The mins' part: sum over the 16 sums of 16 x of min[g / 2] times the sum, as 8 int32.
    const __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn));
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(m8, twice));
    const __m256i s16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sum16 + 16 * b));
    acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(m16, s16)),
                              _mm256_set1_ps(half_f(blk + 2) * dx[b]), acc_min);
    const __m256i s8 = scales8(sc, false);
    const u8* qs = blk + (Five ? 48 : 16);
    __m256i qh = Five ? load32(blk + 16) : _mm256_setzero_si256();
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load32(qs + 32 * c);
      __m256i lo = _mm256_and_si256(q, low4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      if constexpr (Five) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
        hi = _mm256_or_si256(hi,
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
        qh = _mm256_srli_epi16(qh, 2);
      }
      sumi = _mm256_add_epi32(sumi, udot(lo, load32(x + 64 * c), word(s8, 2 * c)));
      sumi = _mm256_add_epi32(sumi, udot(hi, load32(x + 64 * c + 32), word(s8, 2 * c + 1)));
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(half_f(blk) * dx[b]), acc);
  }
  return hsum(_mm256_sub_ps(acc, acc_min));
}

// Q6_K [ql 128][qh 64][scales int8 16][d]: per half of 128, element l + 32 k takes a
// nibble of ql[l + 32 (k % 2)] (low for k < 2) and bits 2k, 2k + 1 of qh[l] (qh shifted
// two bits per k). The levels u in [0, 63] are multiplied unsigned and the offset of 32
// taken off once per block from the sums of 16 x: sum_g sc_g (<u, x>_g - 32 sum16_g).
// Integer sum <= 256 * 63 * 127 * 128.
KV_AVX2_F16C float dot_q6_k(const std::byte* row, const int8_t* qx, const float* dx,
                            const int16_t* sum16, int64_t blocks) {
  const __m256i low4 = _mm256_set1_epi8(15), three = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const u8* blk = reinterpret_cast<const u8*>(row) + 210 * size_t(b);
    prefetch_block(blk, 210);
    const int8_t* x = qx + 256 * b;
    const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
    const __m256i sc16 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    const __m256i s16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sum16 + 16 * b));
    __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(),
                                    _mm256_slli_epi32(_mm256_madd_epi16(sc16, s16), 5));
    for (int half = 0; half < 2; ++half) {
      const __m256i l0 = load32(blk + 64 * half), l1 = load32(blk + 64 * half + 32);
      __m256i qh = load32(blk + 128 + 32 * half);
      const __m256i lows[4] = {_mm256_and_si256(l0, low4), _mm256_and_si256(l1, low4),
                               _mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                               _mm256_and_si256(_mm256_srli_epi16(l1, 4), low4)};
      const __m256i s8 = scales8(sc + 8 * half, true);
      for (int k = 0; k < 4; ++k) {
        const __m256i high = _mm256_slli_epi16(_mm256_and_si256(qh, three), 4);
        qh = _mm256_srli_epi16(qh, 2);
        const __m256i u = _mm256_or_si256(lows[k], high);
        sumi = _mm256_add_epi32(sumi, udot(u, load32(x + 128 * half + 32 * k), pair(s8, k)));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(half_f(blk + 208) * dx[b]), acc);
  }
  return hsum(acc);
}

}  // namespace

QuantDot quant_dot(DType t) {
  switch (t) {
    case DType::Q8_0:
      return dot_signed32<DType::Q8_0>;
    case DType::Q4_0:
      return dot_signed32<DType::Q4_0>;
    case DType::Q5_0:
      return dot_signed32<DType::Q5_0>;
    case DType::IQ4_NL:
      return dot_signed32<DType::IQ4_NL>;
    case DType::Q4_1:
      return dot_min32<DType::Q4_1>;
    case DType::Q5_1:
      return dot_min32<DType::Q5_1>;
    case DType::Q2_K:
      return dot_q2_k;
    case DType::Q3_K:
      return dot_q3_k;
    case DType::Q4_K:
      return dot_q45_k<false>;
    case DType::Q5_K:
      return dot_q45_k<true>;
    case DType::Q6_K:
      return dot_q6_k;
    default:
      return nullptr;
  }
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
QuantDot quant_dot(DType) {
  return nullptr;
}
}  // namespace kvscope::stored_avx2

#endif
