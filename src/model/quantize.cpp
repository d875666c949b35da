// ggml's reference round-to-nearest quantizers (quantize_row_*_ref in ggml-quants.c) for the
// block formats llama.cpp offers as KV cache types: each turns 32 floats into one block of
// the layout quant.cpp dequantizes. The arithmetic follows ggml's step for step (the scale
// is rounded to half only when stored; integer codes come from the unrounded scale), so a
// cache quantized here holds what llama.cpp's `--cache-type-k/-v` would hold.
#include <cfloat>
#include <cmath>
#include <cstring>

#include "kvscope/io/error.hpp"
#include "kvscope/model/dtype.hpp"

namespace kvscope {

namespace {

using u8 = uint8_t;

void put_half(u8* p, float x) {
  const uint16_t h = f32_to_f16(x);
  std::memcpy(p, &h, 2);
}

// The element of largest magnitude, with its sign (the first such in a tie).
float signed_absmax(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), max = x[j];
  return max;
}

// Q8_0: d = max|x| / 127, q = round(x / d) (half away from zero).
void q8_0(const float* x, u8* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(b, d);
  for (int j = 0; j < 32; ++j) b[2 + j] = u8(int8_t(std::round(x[j] * id)));
}

// Q4_0 / Q5_0: d = m / -2^(bits-1) for the signed extreme m, so m maps to code 0;
// code = min(2^bits - 1, trunc(x / d + 2^(bits-1) + 0.5)).
// Q4_1 / Q5_1: d = (max - min) / (2^bits - 1), code = trunc((x - min) / d + 0.5) (Q4_1
// clamps at 15; Q5_1 cannot exceed 31).
void legacy(const float* x, u8* b, int bits, bool with_min) {
  const int top = (1 << bits) - 1;
  float d, m = 0.0f;
  if (with_min) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < 32; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
    d = (hi - lo) / float(top), m = lo;
  } else {
    d = signed_absmax(x) / -float(1 << (bits - 1));
  }
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_half(b, d);
  if (with_min) put_half(b + 2, m);
  u8* p = b + (with_min ? 4 : 2);
  uint32_t qh = 0;
  u8* qs = bits == 5 ? p + 4 : p;
  const float offset = with_min ? 0.5f : float(1 << (bits - 1)) + 0.5f;
  auto code = [&](float v) {
    const int c = int(int8_t((with_min ? v - m : v) * id + offset));
    return (bits == 5 && with_min) ? c : std::min(top, c);
  };
  for (int j = 0; j < 16; ++j) {
    const int lo = code(x[j]), hi = code(x[j + 16]);
    qs[j] = u8((lo & 15) | ((hi & 15) << 4));
    qh |= uint32_t((lo >> 4) & 1) << j;
    qh |= uint32_t((hi >> 4) & 1) << (j + 16);
  }
  if (bits == 5) std::memcpy(p, &qh, 4);
}

// IQ4_NL (ggml's _ref path: no importance weights, no scale search): codes are the nearest
// of the 16 levels to x / d0 with d0 = m / -127 (m the signed extreme); the stored scale is
// the least-squares one for those codes with weights x^2, d = sum(w q x) / sum(w q^2).
const int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                               1,    13,   25,  38,  53,  69,  89,  113};

int nearest_level(float x) {
  if (x <= kIq4Levels[0]) return 0;
  if (x >= kIq4Levels[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    (x < kIq4Levels[mid] ? hi : lo) = mid;
  }
  return x - kIq4Levels[hi - 1] < kIq4Levels[hi] - x ? hi - 1 : hi;
}

void iq4_nl(const float* x, u8* b) {
  std::memset(b, 0, 18);
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  if (amax < 1e-15f) return;  // ggml's GROUP_MAX_EPS: scale 0, codes 0
  const float id = 1.0f / (signed_absmax(x) / float(kIq4Levels[0]));
  int L[32];
  float sumqx = 0.0f, sumq2 = 0.0f;
  for (int j = 0; j < 32; ++j) {
    L[j] = nearest_level(id * x[j]);
    const float q = kIq4Levels[L[j]], w = x[j] * x[j];
    sumqx += w * q * x[j];
    sumq2 += w * q * q;
  }
  put_half(b, sumq2 > 0 ? sumqx / sumq2 : 0.0f);
  for (int j = 0; j < 16; ++j) b[2 + j] = u8(L[j] | (L[j + 16] << 4));
}

}  // namespace

bool dtype_quantizable(DType t) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::IQ4_NL:
      return true;
    default:
      return false;
  }
}

void quantize_blocks(DType t, const float* src, int64_t n_blocks, std::byte* dst) {
  KV_CHECK(dtype_quantizable(t), "no quantizer for {} (kvscope quantizes {})", dtype_name(t),
           "q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl");
  const size_t bb = dtype_block_bytes(t);
  for (int64_t i = 0; i < n_blocks; ++i) {
    const float* x = src + i * 32;
    u8* b = reinterpret_cast<u8*>(dst) + size_t(i) * bb;
    switch (t) {
      case DType::Q8_0:
        q8_0(x, b);
        break;
      case DType::Q4_0:
        legacy(x, b, 4, false);
        break;
      case DType::Q4_1:
        legacy(x, b, 4, true);
        break;
      case DType::Q5_0:
        legacy(x, b, 5, false);
        break;
      case DType::Q5_1:
        legacy(x, b, 5, true);
        break;
      default:
        iq4_nl(x, b);
        break;
    }
  }
}

}  // namespace kvscope
