// AVX2 + FMA decoding kernels. Every function carries the target attribute (not a
// file-wide -mavx2), and nothing from a header is instantiated here, so no AVX2 code can
// reach an inline function the portable code shares.
#include "kernels_avx2.hpp"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include <cstddef>

#define KV_AVX2 __attribute__((target("avx2,fma")))

namespace kvscope::kernels::avx2 {

namespace {

// mask_from(r) for 0 < r <= 8: lanes 0..r-1 set (masked loads of a row's tail).
alignas(32) const int kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

KV_AVX2 inline __m256i mask_from(int r) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - r));
}

KV_AVX2 inline float hsum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

// [sum(a[0]), ..., sum(a[7])]
KV_AVX2 inline __m256 hsum8(const __m256* a) {
  const __m256 h0 = _mm256_hadd_ps(a[0], a[1]), h1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h2 = _mm256_hadd_ps(a[4], a[5]), h3 = _mm256_hadd_ps(a[6], a[7]);
  // g0 = [a0 a1 a2 a3 (lanes 0-3) | a0 a1 a2 a3 (lanes 4-7)], g1 the same for a4..a7
  const __m256 g0 = _mm256_hadd_ps(h0, h1), g1 = _mm256_hadd_ps(h2, h3);
  return _mm256_add_ps(_mm256_permute2f128_ps(g0, g1, 0x20), _mm256_permute2f128_ps(g0, g1, 0x31));
}

// e^x, 8 lanes: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial,
// 2^n through the exponent bits); about 1 ulp for x in [-87.3, 88.3], 0 below.
KV_AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
  const __m256 n = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  // n >= -127 after the clamp; n = -127 gives the exponent bits 0, i.e. 2^n -> 0.
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// y[C * 8] (at y) = sum_j p[j] V[j, col0 : col0 + 8C], with P independent sums over j
// (j mod P) so that narrow rows still keep several FMA chains in flight.
template <int P, int C>
KV_AVX2 void gemv_t_cols(const float* V, int m, int n, const float* p, int col0, float* y) {
  __m256 acc[P][C];
  for (int ph = 0; ph < P; ++ph)
    for (int c = 0; c < C; ++c) acc[ph][c] = _mm256_setzero_ps();
  int j = 0;
  for (; j + P <= m; j += P)
    for (int ph = 0; ph < P; ++ph) {
      const __m256 pj = _mm256_broadcast_ss(p + j + ph);
      const float* row = V + std::size_t(j + ph) * std::size_t(n) + col0;
      for (int c = 0; c < C; ++c)
        acc[ph][c] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(row + 8 * c), acc[ph][c]);
    }
  for (; j < m; ++j) {
    const __m256 pj = _mm256_broadcast_ss(p + j);
    const float* row = V + std::size_t(j) * std::size_t(n) + col0;
    for (int c = 0; c < C; ++c)
      acc[0][c] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(row + 8 * c), acc[0][c]);
  }
  for (int c = 0; c < C; ++c) {
    __m256 s = acc[0][c];
    for (int ph = 1; ph < P; ++ph) s = _mm256_add_ps(s, acc[ph][c]);
    _mm256_storeu_ps(y + col0 + 8 * c, s);
  }
}

}  // namespace

bool supported() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

KV_AVX2 void gemv(const float* W, int out, int in, const float* x, float* y, float alpha,
                  float beta) {
  const int in8 = in & ~7, rem = in - in8;
  const __m256i m = mask_from(rem > 0 ? rem : 8);
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  int r = 0;
  for (; r + 8 <= out; r += 8) {  // eight rows at a time: eight independent sums
    const float* w = W + std::size_t(r) * std::size_t(in);
    __m256 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
    for (int k = 0; k < in8; k += 8) {
      const __m256 xv = _mm256_loadu_ps(x + k);
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(w + std::size_t(i) * in + k), xv, acc[i]);
    }
    if (rem) {
      const __m256 xv = _mm256_maskload_ps(x + in8, m);
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_maskload_ps(w + std::size_t(i) * in + in8, m), xv, acc[i]);
    }
    __m256 s = _mm256_mul_ps(hsum8(acc), va);
    if (beta != 0.0f) s = _mm256_fmadd_ps(vb, _mm256_loadu_ps(y + r), s);
    _mm256_storeu_ps(y + r, s);
  }
  for (; r < out; ++r) {
    const float* w = W + std::size_t(r) * std::size_t(in);
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < in8; k += 8)
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), acc);
    if (rem)
      acc = _mm256_fmadd_ps(_mm256_maskload_ps(w + in8, m), _mm256_maskload_ps(x + in8, m), acc);
    const float s = alpha * hsum(acc);
    y[r] = beta != 0.0f ? s + beta * y[r] : s;
  }
}

KV_AVX2 bool gemv_t(const float* V, int m, int n, const float* p, float* y) {
  if (n % 8 != 0) return false;
  for (int col = 0; col < n;) {
    switch ((n - col) / 8) {  // chunks of 8 columns left; 8 at most per pass
      case 1:
        gemv_t_cols<8, 1>(V, m, n, p, col, y), col += 8;
        break;
      case 2:
        gemv_t_cols<4, 2>(V, m, n, p, col, y), col += 16;
        break;
      case 3:
        gemv_t_cols<2, 3>(V, m, n, p, col, y), col += 24;
        break;
      case 4:
        gemv_t_cols<2, 4>(V, m, n, p, col, y), col += 32;
        break;
      case 5:
        gemv_t_cols<1, 5>(V, m, n, p, col, y), col += 40;
        break;
      case 6:
        gemv_t_cols<1, 6>(V, m, n, p, col, y), col += 48;
        break;
      case 7:
        gemv_t_cols<1, 7>(V, m, n, p, col, y), col += 56;
        break;
      default:
        gemv_t_cols<1, 8>(V, m, n, p, col, y), col += 64;
        break;
    }
  }
  return true;
}

KV_AVX2 float softmax(float* x, int n, bool normalize) {
  const int n8 = n & ~7, rem = n - n8;
  const __m256i m = mask_from(rem > 0 ? rem : 8);
  float mx = x[0];
  if (n8 > 0) {
    __m256 vm = _mm256_loadu_ps(x);
    for (int i = 8; i < n8; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    mx = _mm_cvtss_f32(h);
  }
  for (int i = n8; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  for (int i = 0; i < n8; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (rem) {  // lanes past the end: exp of (0 - max) computed, then zeroed by the mask
    const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(x + n8, m), vmx)),
                                   _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(x + n8, m, e);
    sum = _mm256_add_ps(sum, e);
  }
  const float inv_sum = 1.0f / hsum(sum);
  if (!normalize) return inv_sum;
  const __m256 inv = _mm256_set1_ps(inv_sum);
  for (int i = 0; i < n8; i += 8)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  if (rem) _mm256_maskstore_ps(x + n8, m, _mm256_mul_ps(_mm256_maskload_ps(x + n8, m), inv));
  return inv_sum;
}

KV_AVX2 void silu_mul(float* gate, const float* up, long n) {
  const long n8 = n & ~7L;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (long i = 0; i < n8; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    // silu(g) = g / (1 + e^-g). Below g = -88 exp8 clamps, giving g / 2.4e38 (under
    // 1e-35 in size) where the exact value is smaller still: 0 to any tolerance.
    const __m256 s =
        _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
  }
  for (long i = n8; i < n; ++i) {  // the tail through the same vector code, one lane used
    const __m256 g = _mm256_set1_ps(gate[i]);
    const __m256 s =
        _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    gate[i] = _mm256_cvtss_f32(s) * up[i];
  }
}

}  // namespace kvscope::kernels::avx2

#else  // not x86: the portable kernels run instead

namespace kvscope::kernels::avx2 {
bool supported() {
  return false;
}
void gemv(const float*, int, int, const float*, float*, float, float) {}
bool gemv_t(const float*, int, int, const float*, float*) {
  return false;
}
float softmax(float*, int, bool) {
  return 0.0f;
}
void silu_mul(float*, const float*, long) {}
}  // namespace kvscope::kernels::avx2

#endif
