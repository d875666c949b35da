#include "kvscope/runtime/forward.hpp"

#include <omp.h>

#include <cblas.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include <unistd.h>

#include "huge_pages.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/interrupt.hpp"
#include "kvscope/runtime/kernels.hpp"
#include "kvscope/runtime/ops.hpp"
#include "kvscope/runtime/stored_gemv.hpp"
#include "parallel.hpp"

namespace kvscope {

using runtime_detail::reserve_huge;

namespace {

// A weight matrix [out, in] as the products read it: float32 in memory (mapped, or widened
// with the layer), or its stored tensor, widened a block of rows at a time inside the
// product (too big to widen whole: see ForwardOptions::widen_block_bytes) or, for one
// token, multiplied on its stored rows (stored_gemv).
struct Mat {
  const float* f32 = nullptr;
  const Tensor* stored = nullptr;  // set instead of f32 for a streamed weight
};

// One layer's weights: the matrices as Mats, the rest as float32 pointers (mapped directly
// when stored as aligned f32, else widened into state.wbuf).
struct LayerF32 {
  const float* attn_norm;
  Mat wq, wk, wv, wo;
  const float* ffn_norm;
  Mat w_gate, w_up, w_down;
  const float *k_compress, *q_project;                      // null unless config.compressed_keys()
  const float *bq, *bk, *bv, *bo, *b_gate, *b_up, *b_down;  // null when the model has none
  const float *q_norm, *k_norm;                             // null unless config.qk_norm
  const float *post_attn_norm, *post_ffn_norm;              // null unless config.sandwich_norms
};

// The tensors of a layer, indexed by Slot (model.hpp's table of a layer's tensors).
std::array<const Tensor*, kLayerSlots> layer_tensors(const LayerWeights& w) {
  std::array<const Tensor*, kLayerSlots> ts{};
  for (const SlotRow& r : layer_slots()) ts[size_t(r.slot)] = &(w.*r.member);
  return ts;
}

// Whether t is widened, whole by widen_layer or in blocks by matmul (present, not stored
// as aligned f32).
bool widened(const Tensor& t) {
  return !t.empty() && !t.f32();
}

// Bytes of a layer's tensors as stored, of those to be widened.
size_t widened_bytes(const LayerWeights& w) {
  size_t bytes = 0;
  for (const Tensor* t : layer_tensors(w))
    if (widened(*t)) bytes += t->bytes();
  return bytes;
}

// Maps in the pages of the tensors to be widened.
void populate_layer(const LayerWeights& w) {
  for (const Tensor* t : layer_tensors(w))
    if (widened(*t)) t->populate_pages();
}

// Rows [r0, r0 + n) of t widened into dst ([n, cols] floats), in blocks of 256 rows
// across threads.
void widen_rows(const Tensor& t, int64_t r0, int64_t n, float* dst) {
  const int64_t block = 256;
  parallel_for((n + block - 1) / block, n * t.cols, [&](int64_t b) {
    const int64_t r = b * block;
    t.rows_to_f32(r0 + r, std::min(block, n - r), dst + size_t(r * t.cols));
  });
}

// Layers with at least this many bytes to widen get their pages mapped in by a helper
// thread while the layer before computes (a 7B layer in BF16: ~400 MB, ~100k page faults
// when taken one at a time by the widening loop).
constexpr size_t kPopulateMin = size_t(64) << 20;

// How a call reads the layers' stored (not float32) matrices: `block_bytes` as
// ForwardOptions::widen_block_bytes; `one_token`: the call decodes one token, so every
// stored matrix is multiplied on its stored rows; `keep_pages`: mapped pages stay mapped.
struct WeightReads {
  size_t block_bytes;
  bool one_token, keep_pages;
};

// Whether the products read tensor i (a Slot) of a layer (t) as stored: one of the big
// matrices (W_Q, W_K, W_V, W_O, gate, up, down: SlotRow::matrix) stored in another dtype,
// when decoding one token (dot products on the stored rows) or when bigger than one block
// in float32 (widened a block of rows at a time inside the product).
bool streamed(int i, const Tensor& t, const WeightReads& rd) {
  return layer_slots()[size_t(i)].matrix && widened(t) &&
         (rd.one_token || size_t(t.numel()) * sizeof(float) > rd.block_bytes);
}

// Bytes of the model's stored weights that are not float32 (the pages decoding maps).
size_t stored_bytes(const Weights& w) {
  size_t bytes = 0;
  for (const LayerWeights& lw : w.layers) bytes += widened_bytes(lw);
  for (const Tensor* t : {&w.tok_embedding, &w.classifier, &w.final_norm})
    if (widened(*t)) bytes += t->bytes();
  return bytes;
}

// Asked once per process (glibc asks the kernel each time).
size_t physical_memory() {
  static const size_t bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(0);
  }();
  return bytes;
}

LayerF32 widen_layer(const LayerWeights& w, std::vector<float>& buf, const WeightReads& rd) {
  constexpr int kN = kLayerSlots;
  const auto ts = layer_tensors(w);
  size_t need = 0;
  for (int i = 0; i < kN; ++i)
    if (widened(*ts[i]) && !streamed(i, *ts[i], rd)) need += size_t(ts[i]->numel());
  if (buf.size() < need) {
    reserve_huge(buf, need);
    buf.resize(need);
  }
  Mat out[kN];
  size_t off = 0;
  for (int i = 0; i < kN; ++i) {
    const Tensor& t = *ts[i];
    if (t.empty()) continue;
    if (const float* p = t.f32()) {
      out[i].f32 = p;
    } else if (streamed(i, t, rd)) {
      out[i].stored = &t;
    } else {
      float* dst = buf.data() + off;
      widen_rows(t, 0, t.rows, dst);
      if (!rd.keep_pages) t.release_pages();  // widened: its mapped pages are not needed
      out[i].f32 = dst;
      off += size_t(t.numel());
    }
  }
  const auto m = [&](Slot s) { return out[int(s)]; };
  const auto f = [&](Slot s) { return out[int(s)].f32; };
  return {.attn_norm = f(Slot::kAttnNorm),
          .wq = m(Slot::kWq),
          .wk = m(Slot::kWk),
          .wv = m(Slot::kWv),
          .wo = m(Slot::kWo),
          .ffn_norm = f(Slot::kFfnNorm),
          .w_gate = m(Slot::kGate),
          .w_up = m(Slot::kUp),
          .w_down = m(Slot::kDown),
          .k_compress = f(Slot::kKCompress),
          .q_project = f(Slot::kQProject),
          .bq = f(Slot::kBq),
          .bk = f(Slot::kBk),
          .bv = f(Slot::kBv),
          .bo = f(Slot::kBo),
          .b_gate = f(Slot::kBGate),
          .b_up = f(Slot::kBUp),
          .b_down = f(Slot::kBDown),
          .q_norm = f(Slot::kQNorm),
          .k_norm = f(Slot::kKNorm),
          .post_attn_norm = f(Slot::kPostAttnNorm),
          .post_ffn_norm = f(Slot::kPostFfnNorm)};
}

// y [T, out] = x [T, in] * W^T + beta * y, W in memory or streamed. A streamed W is split
// into equal runs of rows, one per thread; each thread widens its run `rows` rows at a
// time into its part of `block` and multiplies them with a single-threaded sgemm, so the
// GEMM reads back from cache what the thread just widened (widening a 7B layer whole
// wrote and re-read 800 MB), and the threads meet once per matrix, not once per block.
// Each output element is the same dot product either way, summed by another OpenBLAS
// call (the same up to float rounding).
void matmul(const float* x, int T, int in, const Mat& W, int out, float* y, float beta,
            std::vector<float>& block, size_t block_bytes) {
  if (W.f32) {
    matmul_wt(x, T, in, W.f32, out, y, beta);
    return;
  }
  const Tensor& t = *W.stored;
  KV_ASSERT(t.rows == out && t.cols == in);
  if (T == 1) {  // one token: dot products on the stored rows, no float32 copy of W
    stored_gemv(t, x, y, beta);
    return;
  }
  const int nt = worth_threads(int64_t(T) * out * in) ? omp_get_max_threads() : 1;
  const int64_t per_thread = (out + nt - 1) / nt;  // rows of W per thread
  const int rows = int(
      std::clamp<int64_t>(int64_t(block_bytes / nt / (sizeof(float) * size_t(in))), 1, per_thread));
  const size_t slice = size_t(rows) * in;  // [rows, in] floats per thread
  if (block.size() < slice * nt) {
    reserve_huge(block, slice * nt);
    block.resize(slice * nt);
  }
  auto run = [&](int th) {
    float* b = block.data() + slice * size_t(th);
    const int64_t end = std::min<int64_t>(out, (th + 1) * per_thread);
    for (int64_t r0 = th * per_thread; r0 < end; r0 += rows) {
      const int n = int(std::min<int64_t>(rows, end - r0));
      t.rows_to_f32(r0, n, b);  // [n, in]
      // With one token, y is one row and its columns r0.. are contiguous.
      if (T == 1)
        matmul_wt(x, 1, in, b, n, y + r0, beta);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n, in, 1.0f, x, in, b, in, beta,
                    y + r0, out);
    }
  };
  if (nt == 1) {
    run(0);
    return;
  }
  // OpenBLAS runs single-threaded inside a parallel region.
#pragma omp parallel for schedule(static, 1) num_threads(nt)
  for (int th = 0; th < nt; ++th) run(th);
}

// Hands back the pages of a layer's streamed matrices once its products are done (the
// others are released as widen_layer widens them), unless they are kept mapped.
void release_streamed(const LayerWeights& w, const WeightReads& rd) {
  if (rd.keep_pages) return;
  const auto ts = layer_tensors(w);
  for (int i = 0; i < kLayerSlots; ++i)
    if (streamed(i, *ts[size_t(i)], rd)) ts[size_t(i)]->release_pages();
}

// Several products of the same x [T, in] (Projection's meaning): those in memory together
// (matmul_wt_many), then the streamed ones.
struct MatProjection {
  Mat W;
  int out;
  float* y;  // [T, out]
};
void matmul_many(const float* x, int T, int in, std::span<const MatProjection> ps,
                 std::vector<float>& block, size_t block_bytes) {
  std::array<Projection, 3> mem;
  size_t n = 0;
  for (const MatProjection& p : ps)
    if (p.W.f32) {
      KV_ASSERT(n < mem.size());
      mem[n++] = {p.W.f32, p.out, p.y};
    }
  if (n > 0) matmul_wt_many(x, T, in, {mem.data(), n});
  for (const MatProjection& p : ps)
    if (!p.W.f32) matmul(x, T, in, p.W, p.out, p.y, 0.0f, block, block_bytes);
}

// y[t, :] += b for every row t of y [T, n]; nothing when b is null (no bias).
void add_bias(float* y, int T, int n, const float* b) {
  if (!b) return;
  for (int t = 0; t < T; ++t) {
    float* row = y + size_t(t) * n;
    for (int i = 0; i < n; ++i) row[i] += b[i];
  }
}

// Keys of a reduced model (config.compressed_keys()): kc [T, n_kv*hd] where cached head j
// = Psi_j (its group's post-RoPE keys, side by side). k: [T, k_proj_heads*hd];
// psi: [n_kv*hd, group*hd] (rows of head j: Psi_j).
void compress_keys(const float* k, int T, int n_kv, int group, int hd, const float* psi,
                   float* kc) {
  const int KP = n_kv * group * hd, KV = n_kv * hd;
  for (int j = 0; j < n_kv; ++j)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, hd, group * hd, 1.0f,
                k + size_t(j) * group * hd, KP, psi + size_t(j) * hd * group * hd, group * hd, 0.0f,
                kc + size_t(j) * hd, KV);
}

// Queries of a reduced model: q_h <- P_h q_h in place (P_h [hd, hd] = rows h of proj).
void project_queries(float* q, int T, int nh, int hd, const float* proj, std::vector<float>& tmp) {
  const int Q = nh * hd;
  tmp.resize(size_t(T) * Q);
  for (int h = 0; h < nh; ++h)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, hd, hd, 1.0f, q + size_t(h) * hd, Q,
                proj + size_t(h) * hd * hd, hd, 0.0f, tmp.data() + size_t(h) * hd, Q);
  std::memcpy(q, tmp.data(), sizeof(float) * tmp.size());
}

// Copies x [T, n_heads*hd] into [n_heads, T, hd]: into the observer's memory when it
// offers some for this capture, else into `own`. Returns where the copy went.
const float* to_head_major(const float* x, int T, int n_heads, int hd, ForwardObserver* obs,
                           int layer, CaptureKind kind, std::vector<float>& own) {
  const size_t n = size_t(T) * n_heads * hd;
  float* out = obs->capture_target(layer, kind, n);
  if (!out) {
    own.resize(n);
    out = own.data();
  }
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < n_heads; ++h)
      std::memcpy(out + (size_t(h) * T + t) * hd, x + (size_t(t) * n_heads + h) * hd,
                  sizeof(float) * size_t(hd));
  return out;
}

// One-query attention (decoding) with the single-threaded kernels: OpenBLAS threads a
// GEMV once nk * hd passes its threshold (9216), and a threaded GEMV this small costs
// milliseconds instead of microseconds (measured: tinystories656K decoding fell from 7000
// to 40 tokens/s past 576 cached tokens).

// scores[j] = scale * <k_j, q>;  k: [nk, hd]
void dot_rows(const float* k, int nk, int hd, const float* q, float scale, float* scores) {
  kernels::gemv(k, nk, hd, q, scores, scale);
}

// out = sum_j p[j] v_j;  v: [nk, hd]
void weighted_row_sum(const float* v, int nk, int hd, const float* p, float* out) {
  kernels::gemv_t(v, nk, hd, p, out);
}

// Causal attention of one query head over one KV head's cache, in query blocks
// (scores = scale * q.k, soft-capped at `cap` when > 0):
// query t (0-based in this call) sees slots j < n_prev + t + 1, and with window > 0 only
// the last `window` of those (the caller guarantees that slot j holds position j then).
// q: [T, *] with row stride ldq; k, v: [n_keys, hd]; out: [T, *] with row stride ldo;
// scratch: scores [qb, n_keys] and inv_sum [qb].
void attend_head(const float* q, int ldq, int T, const float* k, const float* v, const float* bias,
                 int n_prev, int hd, float scale, float alibi, int window, float cap, float* out,
                 int ldo, float* scores, float* inv_sum, int qb, int layer, int head,
                 ForwardObserver* obs) {
  for (int t0 = 0; t0 < T; t0 += qb) {
    const int nq = std::min(qb, T - t0);
    const int nk = n_prev + t0 + nq;  // keys any query of the block may see
    if (nq == 1)                      // decoding: scores = K q
      dot_rows(k, nk, hd, q + size_t(t0) * ldq, scale, scores);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, q + size_t(t0) * ldq,
                  ldq, k, hd, 0.0f, scores, nk);
    for (int i = 0; i < nq; ++i) {
      float* row = scores + size_t(i) * nk;
      const int visible = n_prev + t0 + i + 1;
      if (cap > 0.0f) softcap(row, visible, cap);  // Gemma 2: on the scaled scores
      if (bias)  // compensation slots of a compressed cache (all among the first n_prev)
        for (int j = 0; j < n_prev; ++j) row[j] += bias[j];
      if (alibi != 0.0f)
        for (int j = 0; j < visible; ++j) row[j] -= alibi * float(visible - 1 - j);
      // Sliding window (slot = position here): the query sees the last `window` slots.
      const int lo = window > 0 ? std::max(0, visible - window) : 0;
      for (int j = 0; j < lo; ++j) row[j] = 0.0f;
      // The weights stay unnormalised (exp(s - max)) and each output row is scaled by
      // 1/sum instead: hd products per row, not n_keys.
      inv_sum[i] = kernels::softmax(row + lo, visible - lo, false);
      for (int j = visible; j < nk; ++j) row[j] = 0.0f;
    }
    if (nq == 1)  // out = V^T p
      weighted_row_sum(v, nk, hd, scores, out + size_t(t0) * ldo);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1.0f, scores, nk, v, hd,
                  0.0f, out + size_t(t0) * ldo, ldo);
    for (int i = 0; i < nq; ++i) {
      float* o = out + size_t(t0 + i) * ldo;
      for (int d = 0; d < hd; ++d) o[d] *= inv_sum[i];
    }
    if (obs) {  // normalised weights for the observer; the output above does not use them,
                // so observing changes no result
      for (int i = 0; i < nq; ++i) {
        float* row = scores + size_t(i) * nk;
        for (int j = 0; j < n_prev + t0 + i + 1; ++j) row[j] *= inv_sum[i];
      }
      obs->on_attention({layer, head, t0, nq, nk, scores});
    }
  }
}

}  // namespace

namespace runtime_detail {

struct Scratch {
  std::vector<float> x, xb, q, k, v, att, hb, hb2;  // [T, width]
  std::vector<float> kc, qtmp, aproj;               // reduced models; attn_proj capture
  std::vector<float> wbuf;                          // a layer's small stored tensors widened to f32
  std::vector<float> wchunk;  // [rows, in]: a block of rows of a streamed weight
  std::vector<float> cap_q, cap_kpre, cap_k, cap_v;  // observer copies
  std::vector<float> scores;                         // per-thread attention rows
};

ScratchPtr::ScratchPtr() noexcept = default;
ScratchPtr::~ScratchPtr() = default;
ScratchPtr::ScratchPtr(const ScratchPtr&) noexcept {}
ScratchPtr& ScratchPtr::operator=(const ScratchPtr&) noexcept {
  return *this;  // keeps its own scratch: the contents are per call
}
ScratchPtr::ScratchPtr(ScratchPtr&&) noexcept = default;
ScratchPtr& ScratchPtr::operator=(ScratchPtr&&) noexcept = default;
Scratch& ScratchPtr::get() {
  if (!p_) p_ = std::make_unique<Scratch>();
  return *p_;
}

}  // namespace runtime_detail

RunState::RunState(const ModelConfig& c, int capacity) : cache(c, capacity) {}

namespace {

void grow(std::vector<float>& b, size_t n) {
  if (b.size() < n) b.resize(n);
}

std::string model_label(const Model& m) {
  return m.files.empty() ? "model '" + m.name + "'" : m.files.front().string();
}

// One call of forward(): the model, the state it advances and this call's sizes. Its
// steps are the transformer's, in run.c's order: embed; per layer, attention then MLP,
// each adding into the residual stream x [T, D]; then logits.
struct Pass {
  const Model& m;
  const ModelConfig& c;
  RunState& s;
  runtime_detail::Scratch& scr;
  const ForwardOptions& opt;
  const int T, most;  // tokens in this call; slots the fullest cache head held before it
  const int D = c.dim, H = c.hidden_dim, hd = c.head_dim, nh = c.n_heads, nkv = c.n_kv_heads;
  const int Q = c.q_dim(), KV = c.kv_dim(), KP = c.k_proj_dim();
  const float nofs = c.norm_offset;
  const int qb = std::max(1, opt.query_block);
  // Per thread: [qb, most + T] attention rows, then [qb] 1 / softmax sums.
  const size_t score_rows = size_t(qb) * size_t(most + T), score_stride = score_rows + size_t(qb);
  ForwardObserver* const obs = opt.observer;
  ForwardObserver* const att_obs = obs && obs->wants_attention() ? obs : nullptr;

  Pass(const Model& model, RunState& state, const ForwardOptions& o, int tokens)
      : m(model),
        c(model.config),
        s(state),
        scr(state.scratch()),
        opt(o),
        T(tokens),
        most(state.cache.max_used()) {}

  // y [T, out] (+)= x [T, in] * W^T, through the streaming block when W is streamed.
  void mm(const float* x, int rows, int in, const Mat& W, int out, float* y, float beta) {
    matmul(x, rows, in, W, out, y, beta, scr.wchunk, opt.widen_block_bytes);
  }
  void mm_many(const float* x, int in, std::span<const MatProjection> ps) {
    matmul_many(x, T, in, ps, scr.wchunk, opt.widen_block_bytes);
  }

  void check_fits() const {
    const KVCache& cache = s.cache;
    KV_CHECK(most + T <= cache.capacity(),
             "forward: {} new tokens do not fit the KV cache ({} of {} slots used)", T, most,
             cache.capacity());
    // The window is applied by slot index, which follows the positions only while every
    // slot holds a contiguous run of the latest positions (trimming keeps that; a cache
    // policy does not).
    KV_CHECK(c.sliding_window == 0 || s.pos + T <= c.sliding_window || !cache.any_edited(),
             "{}: sliding_window is {} and this call reaches position {}, but a cache policy "
             "has compressed the cache, so slots are no longer positions: windowed attention "
             "over a compressed cache is not implemented",
             model_label(m), c.sliding_window, s.pos + T - 1);
  }

  void size_scratch() {
    grow(scr.x, size_t(T) * D);
    grow(scr.xb, size_t(T) * D);
    grow(scr.q, size_t(T) * Q);
    grow(scr.k, size_t(T) * KP);
    if (c.compressed_keys()) grow(scr.kc, size_t(T) * KV);
    grow(scr.v, size_t(T) * KV);
    grow(scr.att, size_t(T) * Q);
    grow(scr.hb, size_t(T) * H);
    grow(scr.hb2, size_t(T) * H);
    grow(scr.scores, score_stride * size_t(omp_get_max_threads()));
  }

  // x [T, D] = the tokens' embedding rows (times sqrt(dim) for Gemma).
  void embed(std::span<const int32_t> tokens) {
    for (int t = 0; t < T; ++t) {
      const int32_t id = tokens[size_t(t)];
      KV_CHECK(id >= 0 && id < c.vocab_size,
               "{}: token id {} at position {} is outside the model's vocabulary (expected 0..{})",
               model_label(m), id, t, c.vocab_size - 1);
      m.weights.tok_embedding.rows_to_f32(id, 1, scr.x.data() + size_t(t) * D);
      if (c.embed_scale != 1.0f)
        for (int i = 0; i < D; ++i) scr.x[size_t(t) * D + i] *= c.embed_scale;
    }
  }

  // q [T, Q], k [T, KP], v [T, KV] from norm(x): biases, per-head norms, RoPE, and a
  // reduced model's key compression. Returns the keys the cache takes ([T, KV]); the
  // pre-RoPE keys go to the observer through cap_kpre.
  const float* project_qkv(int l, const LayerF32& lw, const RopeAngles& angles,
                           const float*& cap_kpre) {
    rmsnorm(scr.x.data(), lw.attn_norm, T, D, c.norm_eps, scr.xb.data(), nofs);
    const MatProjection qkv[] = {
        {lw.wq, Q, scr.q.data()}, {lw.wk, KP, scr.k.data()}, {lw.wv, KV, scr.v.data()}};
    mm_many(scr.xb.data(), D, qkv);
    add_bias(scr.q.data(), T, Q, lw.bq);
    add_bias(scr.k.data(), T, KP, lw.bk);
    add_bias(scr.v.data(), T, KV, lw.bv);
    if (c.qk_norm) {  // each head's vector is a row of [T * heads, head_dim]
      rmsnorm(scr.q.data(), lw.q_norm, T * nh, hd, c.norm_eps, scr.q.data(), nofs);
      rmsnorm(scr.k.data(), lw.k_norm, T * (KP / hd), hd, c.norm_eps, scr.k.data(), nofs);
    }
    cap_kpre = nullptr;  // none for compressed keys: they are made after RoPE
    if (obs && !c.compressed_keys())
      cap_kpre =
          to_head_major(scr.k.data(), T, nkv, hd, obs, l, CaptureKind::kKPreRope, scr.cap_kpre);
    if (c.positional == PositionalKind::kRope) {
      apply_rope(scr.q.data(), T, nh, hd, s.pos, angles, c.rope_layout);
      apply_rope(scr.k.data(), T, KP / hd, hd, s.pos, angles, c.rope_layout);
    }
    if (!c.compressed_keys()) return scr.k.data();
    compress_keys(scr.k.data(), T, nkv, c.k_proj_heads / nkv, hd, lw.k_compress, scr.kc.data());
    project_queries(scr.q.data(), T, nh, hd, lw.q_project, scr.qtmp);
    return scr.kc.data();
  }

  // att [T, Q]: every query head over its KV head's cache (this call's keys included).
  void attend_heads(int l) {
    const KVCache& cache = s.cache;
    const int group = c.group_size();
    const float scale = c.query_scale();
    auto attend = [&](int h, float* sc) {  // sc: this thread's score_stride floats
      const int g = h / group;
      const float slope = c.positional == PositionalKind::kAlibi ? alibi_slope(h, nh) : 0.0f;
      attend_head(scr.q.data() + size_t(h) * hd, Q, T, cache.k_head(l, g), cache.v_head(l, g),
                  cache.bias_head(l, g), cache.used(l, g), hd, scale, slope, c.window_of(l),
                  c.attn_softcap, scr.att.data() + size_t(h) * hd, Q, sc, sc + score_rows, qb, l, h,
                  att_obs);
    };
    // Multiply-adds of this layer's attention: split across threads only when it pays.
    if (worth_threads(int64_t(nh) * T * (most + T) * hd)) {
#pragma omp parallel for schedule(dynamic, 1)
      for (int h = 0; h < nh; ++h)
        attend(h, scr.scores.data() + score_stride * size_t(omp_get_thread_num()));
    } else {
      for (int h = 0; h < nh; ++h) attend(h, scr.scores.data());
    }
  }

  // The attention block of layer l: x += W_O attention(norm(x)) (Gemma: normed again).
  void attention(int l, const LayerF32& lw, const RopeAngles& angles) {
    const float* cap_kpre = nullptr;
    const float* keys = project_qkv(l, lw, angles, cap_kpre);
    s.cache.append(l, keys, scr.v.data(), KV, T);  // counted by commit() after the last layer
    if (opt.on_append) opt.on_append(l, T);
    attend_heads(l);
    // The block's output (after W_O, and Gemma's post-attention norm) separately when an
    // observer asks or the sandwich norm needs it whole.
    const bool want_proj = (obs && obs->wants_attn_proj()) || c.sandwich_norms;
    if (want_proj) {
      grow(scr.aproj, size_t(T) * D);
      mm(scr.att.data(), T, Q, lw.wo, D, scr.aproj.data(), 0.0f);
      add_bias(scr.aproj.data(), T, D, lw.bo);
      if (c.sandwich_norms)
        rmsnorm(scr.aproj.data(), lw.post_attn_norm, T, D, c.norm_eps, scr.aproj.data(), nofs);
    }
    if (obs) {
      const float* q = to_head_major(scr.q.data(), T, nh, hd, obs, l, CaptureKind::kQ, scr.cap_q);
      const float* k = to_head_major(keys, T, nkv, hd, obs, l, CaptureKind::kK, scr.cap_k);
      const float* v = to_head_major(scr.v.data(), T, nkv, hd, obs, l, CaptureKind::kV, scr.cap_v);
      obs->on_layer({l, s.pos, T, nh, nkv, hd, q, cap_kpre, k, v, scr.att.data(),
                     obs->wants_attn_proj() ? scr.aproj.data() : nullptr});
    }
    if (want_proj) {  // residual add
      for (size_t i = 0; i < size_t(T) * D; ++i) scr.x[i] += scr.aproj[i];
    } else {
      mm(scr.att.data(), T, Q, lw.wo, D, scr.x.data(), 1.0f);  // residual add
      add_bias(scr.x.data(), T, D, lw.bo);
    }
  }

  // The MLP block: x += W_down act(W_gate norm(x)) * (W_up norm(x)) (Gemma: normed again).
  void mlp(const LayerF32& lw) {
    rmsnorm(scr.x.data(), lw.ffn_norm, T, D, c.norm_eps, scr.xb.data(), nofs);
    const MatProjection gate_up[] = {{lw.w_gate, H, scr.hb.data()}, {lw.w_up, H, scr.hb2.data()}};
    mm_many(scr.xb.data(), D, gate_up);
    add_bias(scr.hb.data(), T, H, lw.b_gate);
    add_bias(scr.hb2.data(), T, H, lw.b_up);
    if (c.mlp_act == MlpActivation::kGeluTanh)
      geglu_tanh(scr.hb.data(), scr.hb2.data(), int64_t(T) * H);
    else
      swiglu(scr.hb.data(), scr.hb2.data(), int64_t(T) * H);
    if (c.sandwich_norms) {  // Gemma: x += post_ffn_norm(W_down h), via xb (free again)
      mm(scr.hb.data(), T, H, lw.w_down, D, scr.xb.data(), 0.0f);
      add_bias(scr.xb.data(), T, D, lw.b_down);
      rmsnorm(scr.xb.data(), lw.post_ffn_norm, T, D, c.norm_eps, scr.xb.data(), nofs);
      for (size_t i = 0; i < size_t(T) * D; ++i) scr.x[i] += scr.xb[i];
    } else {
      mm(scr.hb.data(), T, H, lw.w_down, D, scr.x.data(), 1.0f);  // residual add
      add_bias(scr.x.data(), T, D, lw.b_down);
    }
  }

  // Every layer, each one's weights widened as it starts (the next one's pages mapped in
  // meanwhile when big) and its streamed pages handed back when it ends.
  void layers() {
    const Weights& w = m.weights;
    // Longrope picks its factors per call, as transformers does: long ones once this call
    // reaches past original_max_position (positions s.pos .. s.pos+T-1); keys already
    // cached keep the rotation they were given.
    const bool long_context = c.rope_scaling.kind == RopeScalingKind::kLongrope &&
                              s.pos + T > c.rope_scaling.original_max_position;
    // Rotation angles up to this call's last position, per kind of layer (0: global, 1:
    // Gemma 3's local), brought up to date when the first layer of the kind needs them.
    bool have_angles[2] = {false, false};
    WeightReads rd{opt.widen_block_bytes, T == 1, false};
    if (rd.one_token) {  // a float32 model has no stored pages to keep or hand back
      const size_t bytes = stored_bytes(w);
      rd.keep_pages = bytes > 0 && bytes <= (opt.mapped_budget_bytes ? opt.mapped_budget_bytes
                                                                     : physical_memory());
    }
    std::jthread next_pages;  // mapping in the next layer's pages (joined when destroyed)
    for (int l = 0; l < c.n_layers; ++l) {
      const int kind = c.local_rope(l) ? 1 : 0;
      RopeAngles& angles = s.rope[kind];
      if (c.positional == PositionalKind::kRope && !have_angles[kind]) {
        rope_angles(s.pos + T, rope_inv_freq(c, l, long_context), rope_attention_factor(c, l),
                    angles);
        have_angles[kind] = true;
      }
      if (next_pages.joinable()) next_pages.join();
      const LayerF32 lw = widen_layer(w.layers[size_t(l)], scr.wbuf, rd);
      if (!rd.keep_pages && l + 1 < c.n_layers &&
          widened_bytes(w.layers[size_t(l) + 1]) >= kPopulateMin)
        next_pages = std::jthread([&w, l] { populate_layer(w.layers[size_t(l) + 1]); });
      attention(l, lw, angles);
      mlp(lw);
      release_streamed(w.layers[size_t(l)], rd);
    }
  }

  // logits [rows, V] = classifier norm(x) for the last row or every row.
  std::span<const float> logits() {
    const Weights& w = m.weights;
    if (opt.logits == LogitsMode::kNone) return {};
    const int rows = opt.logits == LogitsMode::kAll ? T : 1;
    const float* xin = scr.x.data() + size_t(T - rows) * D;
    const float* fn = w.final_norm.f32();
    std::vector<float> fn_buf;
    if (!fn) {
      fn_buf = w.final_norm.to_f32();
      fn = fn_buf.data();
    }
    rmsnorm(xin, fn, rows, D, c.norm_eps, scr.xb.data(), nofs);
    const int V = c.vocab_size;
    grow(s.logits, size_t(rows) * V);
    // The classifier (a [V, D] matrix, maybe stored in another dtype) is always streamed
    // when not float32: widened whole it would be the biggest tensor held.
    const Mat wc =
        w.classifier.f32() ? Mat{w.classifier.f32(), nullptr} : Mat{nullptr, &w.classifier};
    mm(scr.xb.data(), rows, D, wc, V, s.logits.data(), 0.0f);
    if (c.final_softcap > 0.0f) softcap(s.logits.data(), int64_t(rows) * V, c.final_softcap);
    return {s.logits.data(), size_t(rows) * V};
  }
};

}  // namespace

std::span<const float> forward(const Model& m, RunState& s, std::span<const int32_t> tokens,
                               const ForwardOptions& opt) {
  throw_if_interrupted();  // Ctrl-C in the Python module stops here (io/interrupt.hpp)
  KV_CHECK(!tokens.empty(), "forward: no tokens");
  Pass p(m, s, opt, int(tokens.size()));
  p.check_fits();
  p.size_scratch();
  p.embed(tokens);
  p.layers();
  s.cache.commit(p.T);
  s.pos += p.T;
  return p.logits();
}

}  // namespace kvscope
