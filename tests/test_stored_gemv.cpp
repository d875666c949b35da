// One token's products on stored weights (runtime/stored_gemv.hpp) against the widened
// float32 path (Tensor::rows_to_f32, the independent dequantizer) summed in double, for
// every dtype kvscope loads, odd row and column counts, permuted rows, the AVX2 and the
// portable kernels, one thread and several; and a decoded token of a BF16 and a Q8_0
// model against the same model's prefill.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "gguf_convert.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/kernels.hpp"
#include "kvscope/runtime/stored_gemv.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;

namespace {

// A [rows, cols] tensor of random stored bytes whose every block widens to finite values
// below 1e4 (random scale halves can be infinite or huge: such blocks are drawn again).
Tensor random_tensor(DType t, int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const size_t bb = dtype_block_bytes(t);
  const int64_t be = dtype_block(t);
  auto bytes = std::make_shared<std::vector<std::byte>>(row_bytes(t, cols) * size_t(rows) + 1);
  std::vector<float> w(static_cast<size_t>(be));
  // Offset by one byte: the kernels must take any alignment, as mapped files give.
  std::byte* base = bytes->data() + 1;
  for (size_t b = 0; b < size_t(rows * cols / be); ++b) {
    std::byte* blk = base + b * bb;
    for (;;) {
      for (size_t i = 0; i < bb; ++i) blk[i] = std::byte(rng() & 0xff);
      if (t == DType::F32)  // a float of random bytes: keep it small and finite
        for (size_t i = 0; i < bb; i += 4) blk[i + 3] = std::byte(uint8_t(blk[i + 3]) & 0xBF);
      widen_to_f32(t, blk, size_t(be), w.data());
      bool ok = true;
      for (float v : w) ok = ok && std::isfinite(v) && std::abs(v) < 1e4f;
      if (ok) break;
    }
  }
  Tensor out;
  out.name = std::string("random ") + std::string(dtype_name(t));
  out.dtype = t;
  out.rows = rows;
  out.cols = cols;
  out.data = base;
  out.owner = bytes;
  return out;
}

std::vector<float> random_x(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = nd(rng);
  return x;
}

// The activation as stored_gemv.hpp documents it: blocks of `qb` (32 for the 32-element
// block types, 256 for the k-quants), d = max|x| / 127, q = round(x / d) (halves away
// from zero), x ~ d q.
std::vector<double> q8_rule(const std::vector<float>& x, size_t qb) {
  std::vector<double> out(x.size());
  for (size_t b = 0; b < x.size(); b += qb) {
    float amax = 0;
    for (size_t i = 0; i < qb; ++i) amax = std::max(amax, std::abs(x[b + i]));
    const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
    for (size_t i = 0; i < qb; ++i) out[b + i] = double(d) * double(std::lround(x[b + i] * id));
  }
  return out;
}

size_t rule_block(DType t) {
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      return 0;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return 256;
    default:
      return 32;
  }
}

// y = W x in double from the widened weights.
std::vector<double> reference(const Tensor& W, const std::vector<double>& x) {
  const std::vector<float> w = W.to_f32();
  std::vector<double> y(size_t(W.rows), 0.0);
  for (int64_t r = 0; r < W.rows; ++r)
    for (int64_t c = 0; c < W.cols; ++c)
      y[size_t(r)] += double(w[size_t(r * W.cols + c)]) * x[size_t(c)];
  return y;
}

double rel_l2(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  return test::rel_error(got.data(), want.data(), want.size());
}

// Byte offsets of the half-float scales in one block of each block type (ggml-common.h).
std::vector<size_t> half_offsets(DType t) {
  switch (t) {
    case DType::Q4_1:
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K:
      return {0, 2};
    case DType::Q2_K:
      return {80, 82};
    case DType::Q3_K:
      return {108};
    case DType::Q6_K:
      return {208};
    default:  // Q8_0, Q4_0, Q5_0, IQ4_NL
      return {0};
  }
}

// The last token's logits of a prefill over toks (stored matrices widened, GEMM).
std::vector<double> prefill_last(const Model& m, const std::vector<int32_t>& toks) {
  RunState st(m.config, 16);
  const auto all = forward(m, st, toks);
  return std::vector<double>(all.end() - long(m.config.vocab_size), all.end());
}

// The last token's logits of feeding toks one at a time (one-token products on the
// stored rows).
std::vector<float> decode_last(const Model& m, const std::vector<int32_t>& toks,
                               ForwardOptions opt = {LogitsMode::kLast}) {
  RunState st(m.config, 16);
  std::vector<float> last;
  for (int32_t t : toks) {
    const auto lg = forward(m, st, std::vector<int32_t>{t}, opt);
    last.assign(lg.begin(), lg.end());
  }
  return last;
}

struct Case {
  DType t;
  int64_t rows, cols;
};

}  // namespace

TEST_CASE(
    "stored_gemv equals the widened product for every stored dtype, odd shapes and "
    "permuted rows, with the AVX2 and the portable kernels",
    "[kernels][quant]") {
  const bool was = kernels::simd_active();
  // Rows odd; columns odd for the element types (loop tails), odd multiples of the block
  // for the block types.
  const Case cases[] = {{DType::F32, 37, 45},   {DType::F16, 37, 45},   {DType::BF16, 37, 45},
                        {DType::Q8_0, 37, 96},  {DType::Q4_0, 37, 96},  {DType::Q4_1, 37, 96},
                        {DType::Q5_0, 37, 96},  {DType::Q5_1, 37, 96},  {DType::IQ4_NL, 37, 96},
                        {DType::Q2_K, 13, 768}, {DType::Q3_K, 13, 768}, {DType::Q4_K, 13, 768},
                        {DType::Q5_K, 13, 768}, {DType::Q6_K, 13, 768}};
  for (const Case& k : cases)
    for (bool permuted : {false, true})
      for (bool simd : {true, false}) {
        kernels::use_simd(simd);
        Tensor W = random_tensor(k.t, k.rows, k.cols, 7 + uint64_t(k.t));
        if (permuted) {  // rows read in reverse, as GGUF's llama Q/K are read through an order
          auto order = std::make_shared<std::vector<int32_t>>();
          for (int64_t r = k.rows - 1; r >= 0; --r) order->push_back(int32_t(r));
          W.row_order = order;
        }
        const std::vector<float> x = random_x(k.cols, 3);
        std::vector<float> y(size_t(k.rows));
        stored_gemv(W, x.data(), y.data(), 0.0f);
        INFO(dtype_name(k.t) << (permuted ? " permuted" : "") << (simd ? " simd" : " portable"));
        const std::vector<double> exact = reference(W, std::vector<double>(x.begin(), x.end()));
        if (rule_block(k.t) > 0) {
          // The integer products are exact: only float rounding of the block sums is left
          // against the documented int8 rule; against the unquantized x the activation's
          // rounding (at most d / 2 per element) shows.
          CHECK(rel_l2(y, reference(W, q8_rule(x, rule_block(k.t)))) < 1e-5);
          CHECK(rel_l2(y, exact) < 2e-2);
        } else {
          CHECK(rel_l2(y, exact) < 1e-5);  // float accumulation of the same products
        }
      }
  kernels::use_simd(was);
}

TEST_CASE(
    "stored_gemv's integer sums do not saturate: every level at its extreme against an "
    "activation at +-127",
    "[kernels][quant]") {
  // Blocks of one repeated byte (0xFF: every level and scale at its top; 0x80 and 0x7F:
  // the signed extremes), with each type's float scales (byte offsets from ggml-common.h)
  // set to 2^-10 so the values stay finite. x of +-1 quantizes to +-127 exactly, the
  // largest int8 products the kernels meet; a saturated int16 or int32 lane would be far
  // off the double reference.
  const DType types[] = {DType::Q8_0, DType::Q4_0,   DType::Q4_1, DType::Q5_0,
                         DType::Q5_1, DType::IQ4_NL, DType::Q2_K, DType::Q3_K,
                         DType::Q4_K, DType::Q5_K,   DType::Q6_K};
  const bool was = kernels::simd_active();
  const uint16_t h = f32_to_f16(0x1p-10f);
  for (DType t : types)
    for (uint8_t fill : {uint8_t(0xFF), uint8_t(0x80), uint8_t(0x7F)})
      for (bool alternate : {false, true})
        for (bool simd : {true, false}) {
          kernels::use_simd(simd);
          const int64_t cols = 512, rows = 3;
          auto bytes =
              std::make_shared<std::vector<std::byte>>(row_bytes(t, cols) * rows, std::byte(fill));
          const size_t bb = dtype_block_bytes(t);
          for (size_t b = 0; b < bytes->size() / bb; ++b)
            for (size_t at : half_offsets(t)) std::memcpy(bytes->data() + b * bb + at, &h, 2);
          Tensor W;
          W.name = "extreme";
          W.dtype = t;
          W.rows = rows;
          W.cols = cols;
          W.data = bytes->data();
          W.owner = bytes;
          std::vector<float> x(size_t(cols), 1.0f);
          if (alternate)
            for (size_t i = 0; i < x.size(); i += 2) x[i] = -1.0f;
          std::vector<float> y(static_cast<size_t>(rows));
          stored_gemv(W, x.data(), y.data(), 0.0f);
          INFO(dtype_name(t) << " fill " << int(fill) << (alternate ? " +-1" : " +1")
                             << (simd ? " simd" : " portable"));
          // x is exactly representable in the int8 rule, so the product is exact up to
          // float rounding of the block sums.
          CHECK(rel_l2(y, reference(W, std::vector<double>(x.begin(), x.end()))) < 1e-5);
        }
  kernels::use_simd(was);
}

TEST_CASE("stored_gemv: threads, beta and a non-finite activation", "[kernels][quant]") {
  // Big enough to split over the threads (rows * cols >= kParallelMin).
  const Tensor W = random_tensor(DType::Q8_0, 301, 1024, 11);
  const std::vector<float> x = random_x(1024, 5);
  std::vector<float> y(301, 2.0f);
  stored_gemv(W, x.data(), y.data(), 0.5f);  // y = W x + 0.5 * 2
  std::vector<double> want = reference(W, q8_rule(x, 32));
  for (double& v : want) v += 1.0;
  CHECK(rel_l2(y, want) < 1e-5);
  // A NaN in x has no int8 form: it must reach y as the widened product would carry it,
  // never as a finite number.
  std::vector<float> bad = x;
  bad[100] = std::numeric_limits<float>::quiet_NaN();
  stored_gemv(W, bad.data(), y.data(), 0.0f);
  for (float v : y) CHECK(std::isnan(v));
}

TEST_CASE("a decoded token of a BF16 and a Q8_0 model equals the same model's prefill",
          "[forward][quant]") {
  test::TempDir d("stored_gemv_decode");
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.dim = 64, c.hidden_dim = 160, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
  c.head_dim = 16, c.vocab_size = 96, c.max_seq_len = 64, c.tied_embeddings = false;
  spec.dtype = DType::BF16;
  spec.seed = 5;
  write_synthetic_hf_model(d / "bf16", spec);
  // LoadOptions{0}: kept as stored (small models are otherwise widened at load).
  const Model bf16 = load_model(d / "bf16", LoadOptions{0});
  Model twin;
  test::write_gguf(d / "q8.gguf", bf16, true, &twin);
  const Model q8 = load_model(d / "q8.gguf", LoadOptions{0});
  REQUIRE(q8.weights.layers[0].wq.dtype == DType::Q8_0);
  REQUIRE(bf16.weights.layers[0].wq.dtype == DType::BF16);
  std::vector<int32_t> toks;
  for (int i = 0; i < 12; ++i) toks.push_back(int32_t((i * 7 + 3) % c.vocab_size));
  for (const Model* m : {&bf16, &q8}) {
    // Prefill widens the stored matrices to float32 (GEMM); one token at a time multiplies
    // on the stored rows. BF16: the same products up to float rounding. Q8_0: the
    // activation rounded to 8 bits per product, as llama.cpp does.
    const std::vector<float> got = decode_last(*m, toks);
    INFO(dtype_name(m->weights.layers[0].wq.dtype));
    CHECK(rel_l2(got, prefill_last(*m, toks)) < (m == &bf16 ? 1e-5 : 2e-2));
    // Pages handed back after every layer (a budget below the model) or kept mapped from
    // token to token: the same numbers.
    ForwardOptions lean;
    lean.logits = LogitsMode::kLast;
    lean.mapped_budget_bytes = 1;
    CHECK(decode_last(*m, toks, lean) == got);
  }
}

TEST_CASE("a decoded token of a k-quant GGUF model equals the same model's prefill",
          "[forward][quant]") {
  // Every matrix stored in one of the five k-quants (random packed bits under small finite
  // scales, as bench/gen_synthetic_gguf writes them), chosen by name so each type meets
  // the decoding step; dims are multiples of their 256-element blocks.
  test::TempDir d("stored_gemv_kquant");
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.dim = 256, c.hidden_dim = 512, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
  c.head_dim = 64, c.vocab_size = 256, c.max_seq_len = 64, c.tied_embeddings = false;
  spec.seed = 9;
  write_synthetic_hf_model(d / "f32", spec);
  const Model f32 = load_model(d / "f32", LoadOptions{0});
  // Tensor name suffix, ggml type id, and the type.
  struct K {
    const char* suffix;
    uint32_t id;
    DType t;
  };
  const K kinds[] = {{"attn_q.weight", 12, DType::Q4_K},   {"attn_k.weight", 13, DType::Q5_K},
                     {"attn_v.weight", 14, DType::Q6_K},   {"attn_output.weight", 11, DType::Q3_K},
                     {"ffn_gate.weight", 10, DType::Q2_K}, {"ffn_up.weight", 12, DType::Q4_K},
                     {"ffn_down.weight", 14, DType::Q6_K}, {"output.weight", 13, DType::Q5_K}};
  std::mt19937_64 rng(17);
  const uint16_t scale = f32_to_f16(0x1p-12f);
  const test::MatrixEncoder encode = [&](const std::string& name, int64_t rows, int64_t cols,
                                         uint32_t* type, std::string* bytes) {
    for (const K& k : kinds) {
      if (!name.ends_with(k.suffix)) continue;
      const size_t bb = dtype_block_bytes(k.t);
      bytes->resize(row_bytes(k.t, cols) * size_t(rows));
      for (char& b : *bytes) b = char(rng() & 0xff);
      for (size_t b = 0; b < bytes->size() / bb; ++b)
        for (size_t at : half_offsets(k.t)) std::memcpy(bytes->data() + b * bb + at, &scale, 2);
      *type = k.id;
      return true;
    }
    return false;  // the embedding: F32
  };
  Model unused;
  test::write_gguf(d / "k.gguf", f32, false, &unused, {}, encode);
  const Model m = load_model(d / "k.gguf", LoadOptions{0});
  const LayerWeights& l = m.weights.layers[0];
  REQUIRE(l.wq.dtype == DType::Q4_K);
  REQUIRE(l.wk.dtype == DType::Q5_K);
  REQUIRE(l.wv.dtype == DType::Q6_K);
  REQUIRE(l.wo.dtype == DType::Q3_K);
  REQUIRE(l.w_gate.dtype == DType::Q2_K);
  REQUIRE(m.weights.classifier.dtype == DType::Q5_K);
  std::vector<int32_t> toks;
  for (int i = 0; i < 12; ++i) toks.push_back(int32_t((i * 37 + 5) % c.vocab_size));
  const bool was = kernels::simd_active();
  for (bool simd : {true, false}) {
    kernels::use_simd(simd);
    // Prefill widens the blocks to float32 (GEMM); one token at a time multiplies them in
    // integers against the activation rounded to 8 bits in blocks of 256 per product, so
    // the logits differ by that rounding, carried through two layers.
    const std::vector<float> got = decode_last(m, toks);
    const std::vector<double> want = prefill_last(m, toks);
    INFO((simd ? "simd" : "portable") << ": relative L2 " << rel_l2(got, want));
    CHECK(rel_l2(got, want) < 2e-2);  // measured 0.8%
    CHECK(rel_l2(got, want) > 0.0);   // the two paths really differ (rounded activation)
  }
  kernels::use_simd(was);
}
