#include "kvscope/train/trainer.hpp"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <exception>
#include <random>

#include "kvscope/io/error.hpp"

namespace kvscope::train {

double learning_rate(const TrainOptions& o, int step) {
  if (step < o.warmup) return o.lr * double(step + 1) / double(o.warmup);
  const int span = std::max(1, o.steps - o.warmup);
  const double t = std::min(1.0, double(step - o.warmup) / double(span));
  return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(M_PI * t));
}

void adamw_step(const Layout& L, const TrainOptions& o, double lr, std::span<float> w,
                std::span<const float> g, AdamState& st) {
  if (st.m.empty()) st.m.assign(L.size, 0.0f), st.v.assign(L.size, 0.0f);
  ++st.step;
  const double c1 = 1.0 - std::pow(o.beta1, double(st.step));
  const double c2 = 1.0 - std::pow(o.beta2, double(st.step));
  for (const TensorSpec& t : L.tensors) {
    const bool decay = t.rows > 1;  // matrices, not norm gains
    const size_t n = size_t(t.rows * t.cols);
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t j = 0; j < n; ++j) {
      const size_t i = t.offset + j;
      if (!o.trainable.empty() && !o.trainable[i]) continue;
      st.m[i] = float(o.beta1 * st.m[i] + (1 - o.beta1) * g[i]);
      st.v[i] = float(o.beta2 * st.v[i] + (1 - o.beta2) * double(g[i]) * g[i]);
      const double mh = st.m[i] / c1, vh = st.v[i] / c2;
      double x = w[i];
      if (decay) x -= lr * o.weight_decay * x;
      x -= lr * mh / (std::sqrt(vh) + o.eps);
      w[i] = float(x);
    }
  }
}

std::vector<int32_t> random_block_sequence(int32_t bos, const RandomBlocks& rb, int seq_len,
                                           int len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int range = rb.token_hi - rb.token_lo;
  std::vector<int32_t> block(static_cast<size_t>(len));
  if (range >= len) {  // distinct ids: a partial Fisher-Yates over the range
    std::vector<int32_t> ids(static_cast<size_t>(range));
    for (int i = 0; i < range; ++i) ids[size_t(i)] = rb.token_lo + i;
    for (int i = 0; i < len; ++i) {
      std::swap(ids[size_t(i)], ids[size_t(i) + size_t(rng() % uint64_t(range - i))]);
      block[size_t(i)] = ids[size_t(i)];
    }
  } else {
    for (int32_t& t : block) t = rb.token_lo + int32_t(rng() % uint64_t(range));
  }
  std::vector<int32_t> s{bos};
  while (int(s.size()) < seq_len) s.push_back(block[(s.size() - 1) % size_t(len)]);
  return s;
}

namespace {

// A uniform double in [0, 1) from the top 53 bits of one draw.
double unit(uint64_t r) {
  return double(r >> 11) / 9007199254740992.0;
}

// Where a passage of `len` tokens (len <= n / 2) and its copy go in a window of n tokens,
// from two draws: p1 anywhere it leaves room for the copy, p2 >= p1 + len anywhere after.
// Length and distance vary, so that no fixed-offset head can do the copying: only matching
// the current token earlier and reading what followed it (induction) can.
std::pair<int64_t, int64_t> two_places(int64_t n, int64_t len, uint64_t r1, uint64_t r2) {
  const int64_t p1 = int64_t(r1 % uint64_t(n - 2 * len + 1));
  return {p1, p1 + len + int64_t(r2 % uint64_t(n - p1 - 2 * len + 1))};
}

}  // namespace

std::vector<std::vector<int32_t>> batch_at(std::span<const int32_t> stream, int32_t bos,
                                           const TrainOptions& o, int step, int64_t* block_tokens) {
  const int64_t n = o.seq_len - 1;
  KV_CHECK(int64_t(stream.size()) > n, "training: the text has {} tokens, a sequence needs {}",
           stream.size(), n + 1);
  std::mt19937_64 rng(o.seed * 0x9e3779b97f4a7c15ull + uint64_t(step));
  // A second stream decides which sequences repeat, so the offsets (and every batch of a
  // run without repeats) are the same as before the option existed.
  std::mt19937_64 rep(~(o.seed * 0x9e3779b97f4a7c15ull + uint64_t(step)));
  // And a third which sequences are random blocks (three draws each whatever the share,
  // three more with random_blocks.embedded).
  std::mt19937_64 blk((o.seed + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull + uint64_t(step));
  const RandomBlocks& rb = o.random_blocks;
  KV_CHECK(bos >= 0 || rb.share == 0,
           "training: random_blocks start each block sequence with BOS, and this tokenizer adds "
           "none (set random_blocks.share to 0, or use a tokenizer with a BOS)");
  if (block_tokens) *block_tokens = 0;
  std::vector<std::vector<int32_t>> out;
  for (int b = 0; b < o.batch; ++b) {
    const uint64_t off = rng() % uint64_t(int64_t(stream.size()) - n + 1);
    // [BOS] + n tokens; with no BOS (a tokenizer that adds none), n + 1 tokens of the
    // stream from the one before `off` (from 0 at the start), so that every sequence still
    // has seq_len tokens.
    std::vector<int32_t> s;
    if (bos >= 0) {
      s.push_back(bos);
      s.insert(s.end(), stream.begin() + long(off), stream.begin() + long(off + uint64_t(n)));
    } else {
      const uint64_t from = off > 0 ? off - 1 : 0;
      s.assign(stream.begin() + long(from), stream.begin() + long(from + uint64_t(n) + 1));
    }
    if (o.repeat_share > 0 && n >= 4) {
      // Four draws per sequence whether it repeats or not: which passage a sequence would
      // repeat does not depend on the share.
      const double u = unit(rep());
      const uint64_t r1 = rep(), r2 = rep(), r3 = rep();
      if (u < o.repeat_share) {
        // Copy a passage of length len from p1 over a later stretch at p2 >= p1 + len.
        const int64_t lo = std::max<int64_t>(2, n / 8), hi = n / 2;
        const int64_t len = lo + int64_t(r1 % uint64_t(hi - lo + 1));
        const auto [p1, p2] = two_places(n, len, r2, r3);
        std::copy_n(s.begin() + 1 + p1, len, s.begin() + 1 + p2);
      }
    }
    if (rb.share > 0) {
      const double u = unit(blk());
      const uint64_t r_len = blk(), r_seed = blk();
      // Three more draws per sequence when some blocks are embedded (only then, so that
      // runs without the key keep their batches).
      const double e = rb.embedded > 0 ? unit(blk()) : 1.0;
      const uint64_t r_p1 = rb.embedded > 0 ? blk() : 0, r_p2 = rb.embedded > 0 ? blk() : 0;
      const int len = rb.min_len + int(r_len % uint64_t(rb.max_len - rb.min_len + 1));
      if (u < rb.share && e < rb.embedded) {
        // A passkey in text, told twice: the block (at most half the window) placed as
        // repeat_share places its passage.
        const int64_t kl = std::min<int64_t>(n / 2, len);
        const std::vector<int32_t> block =
            random_block_sequence(bos, rb, int(kl) + 1, int(kl), r_seed);  // [bos, block]
        const auto [p1, p2] = two_places(n, kl, r_p1, r_p2);
        std::copy(block.begin() + 1, block.end(), s.begin() + 1 + p1);
        std::copy(block.begin() + 1, block.end(), s.begin() + 1 + p2);
        if (block_tokens) *block_tokens += 2 * kl;
      } else if (u < rb.share) {
        const int sl = rb.seq_len > 0 ? rb.seq_len : o.seq_len;
        s = random_block_sequence(bos, rb, sl, len, r_seed);
        if (block_tokens) *block_tokens += sl;
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

namespace {

// Threads take sequences i, i + n_threads, ... and sum into their own buffer; the buffers
// are then added in thread order: deterministic for a given thread count.
double parallel_loss(const Layout& L, const float* w, const std::vector<std::vector<int32_t>>& seqs,
                     std::vector<float>* grad) {
  const int nt = std::max(1, std::min(omp_get_max_threads(), int(seqs.size())));
  std::vector<std::vector<float>> grads(size_t(grad ? nt : 0), std::vector<float>());
  std::vector<double> losses(seqs.size());
  const double scale = 1.0 / double(seqs.size());
  // An exception may not leave an OpenMP region (std::terminate): the first one is kept
  // and rethrown after it.
  std::exception_ptr failed;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    try {
      Workspace<float> ws;
      if (grad) grads[size_t(t)].assign(L.size, 0.0f);
      for (size_t i = size_t(t); i < seqs.size(); i += size_t(nt))
        losses[i] =
            loss_and_grad(L, w, seqs[i], grad ? grads[size_t(t)].data() : nullptr, scale, ws);
    } catch (...) {
#pragma omp critical(kvscope_parallel_loss)
      if (!failed) failed = std::current_exception();
    }
  }
  if (failed) std::rethrow_exception(failed);
  if (grad) {
    grad->assign(L.size, 0.0f);
    for (const auto& g : grads)
      for (size_t i = 0; i < L.size; ++i) (*grad)[i] += g[i];
  }
  double sum = 0;
  for (double l : losses) sum += l;
  return sum / double(seqs.size());
}

}  // namespace

StepStats train_step(const Layout& L, const TrainOptions& o, std::span<float> w, AdamState& st,
                     const std::vector<std::vector<int32_t>>& batch, int step) {
  const auto t0 = std::chrono::steady_clock::now();
  StepStats s;
  s.step = step;
  std::vector<float> g;
  s.loss = parallel_loss(L, w.data(), batch, &g);
  if (!o.trainable.empty())
    for (size_t i = 0; i < g.size(); ++i) g[i] *= float(o.trainable[i]);
  double ss = 0;
  for (float x : g) ss += double(x) * x;
  s.grad_norm = std::sqrt(ss);
  KV_CHECK(std::isfinite(s.loss) && std::isfinite(s.grad_norm),
           "training diverged at step {}: loss {}, gradient norm {}", step, s.loss, s.grad_norm);
  if (o.clip > 0 && s.grad_norm > o.clip)
    for (float& x : g) x *= float(o.clip / s.grad_norm);
  s.lr = learning_rate(o, step);
  adamw_step(L, o, s.lr, w, g, st);
  for (const auto& b : batch) s.tokens += int64_t(b.size());
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

double mean_loss(const Layout& L, std::span<const float> w,
                 const std::vector<std::vector<int32_t>>& seqs) {
  return parallel_loss(L, w.data(), seqs, nullptr);
}

std::vector<std::vector<int32_t>> heldout_windows(std::span<const int32_t> stream, int32_t bos,
                                                  int seq_len, int64_t tokens) {
  std::vector<std::vector<int32_t>> out;
  // Each window scores n = seq_len - 1 targets: [BOS] + n tokens, or seq_len tokens of the
  // stream when the tokenizer adds no BOS.
  const size_t n = size_t(seq_len - 1), take = bos >= 0 ? n : n + 1;
  for (size_t off = 0; off + take <= stream.size() && int64_t(out.size() * n) < tokens;
       off += take) {
    std::vector<int32_t> s;
    if (bos >= 0) s.push_back(bos);
    s.insert(s.end(), stream.begin() + long(off), stream.begin() + long(off + take));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace kvscope::train
