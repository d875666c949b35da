#include "kvscope/runtime/perplexity.hpp"

#include <omp.h>
#include <chrono>

#include <cmath>

#include "kvscope/io/error.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/forward.hpp"

namespace kvscope {

double PerplexityResult::perplexity() const {
  return std::exp(mean_nll());
}

double PerplexityResult::bits_per_byte() const {
  return bytes_scored ? nll_sum / std::log(2.0) / double(bytes_scored) : 0.0;
}

std::vector<int32_t> token_stream(const Tokenizer& tok, const std::vector<std::string>& docs) {
  std::vector<int32_t> s;
  for (const std::string& d : docs) {
    if (tok.sequence_bos() >= 0) s.push_back(tok.sequence_bos());
    const std::vector<int32_t> ids = tok.encode(d);
    s.insert(s.end(), ids.begin(), ids.end());
  }
  return s;
}

double log_sum_exp(std::span<const float> logits) {
  double mx = logits[0];
  for (float v : logits) mx = std::max(mx, double(v));
  double z = 0.0;
  for (float v : logits) z += std::exp(double(v) - mx);
  return mx + std::log(z);
}

double token_nll(std::span<const float> logits, int32_t target) {
  return log_sum_exp(logits) - double(logits[size_t(target)]);
}

namespace {

// One forward pass of the sliding window: input = [BOS if bos_prefix] + stream[b, e);
// it scores the targets stream[score_from, e).
struct Window {
  size_t b, e, score_from;
  bool bos_prefix;
};

std::vector<Window> plan_windows(std::span<const int32_t> stream, size_t N, int W, int S,
                                 int32_t bos) {
  std::vector<Window> out;
  size_t prev_end = 1;  // position 0 (the first BOS or token) is never a target
  while (prev_end < N) {
    const size_t e = out.empty() ? std::min(N, size_t(W)) : std::min(N, prev_end + size_t(S));
    Window w{0, e, prev_end, false};
    if (e > size_t(W)) {  // else the start of the stream fits: no BOS is invented
      w.b = e - size_t(W);
      if (bos < 0 || stream[w.b] != bos) {
        ++w.b;
        w.bos_prefix = bos >= 0;
      }
    }
    out.push_back(w);
    prev_end = e;
  }
  return out;
}

struct WindowScore {
  double nll = 0.0;
  int64_t n = 0;
};

WindowScore score_window(const Model& m, RunState& st, std::span<const int32_t> stream,
                         const Window& w, int32_t bos, std::vector<int32_t>& input) {
  input.clear();
  if (w.bos_prefix) input.push_back(bos);
  const size_t offset = input.size();  // input index i holds stream[b + i - offset]
  input.insert(input.end(), stream.begin() + long(w.b), stream.begin() + long(w.e));
  st.reset();
  const auto logits = forward(m, st, input);
  const size_t V = size_t(m.config.vocab_size);
  WindowScore r;
  for (size_t p = w.score_from; p < w.e; ++p) {
    if (stream[p] == bos) continue;
    const size_t row = p - w.b + offset - 1;  // the input row that predicts stream[p]
    r.nll += token_nll(logits.subspan(row * V, V), stream[p]);
    ++r.n;
  }
  return r;
}

}  // namespace

PerplexityResult perplexity(const Model& m, const Tokenizer& tok, std::span<const int32_t> stream,
                            const PerplexityOptions& opt) {
  PerplexityResult r;
  const int W = opt.window > 0 ? opt.window : m.config.default_seq_len();
  const int S = opt.stride > 0 ? opt.stride : std::max(1, W / 2);
  KV_CHECK(W >= 2, "perplexity: window must be at least 2 tokens, got {}", W);
  KV_CHECK(S <= W - 1, "perplexity: stride {} must be at most window - 1 = {}", S, W - 1);
  r.window = W;
  r.stride = S;
  const int32_t bos = tok.sequence_bos();
  size_t N = stream.size();
  if (opt.max_tokens > 0 && N > size_t(opt.max_tokens) + 1) N = size_t(opt.max_tokens) + 1;
  if (N < 2) return r;
  const std::vector<Window> windows = plan_windows(stream, N, W, S, bos);
  std::vector<WindowScore> scores(windows.size());

  const auto t0 = std::chrono::steady_clock::now();
  // Small models: one window per thread (their GEMMs are too small to split well); the
  // forward pass inside then runs single-threaded. Big models: windows in order, each
  // forward pass using every thread. Sums are reduced in window order either way.
  const bool per_window_threads = m.config.dim * int64_t(m.config.n_layers) <= 64 * 1024 &&
                                  omp_get_max_threads() > 1 && windows.size() > 1;
  if (per_window_threads) {
#pragma omp parallel
    {
      RunState st(m.config, W);
      std::vector<int32_t> input;
#pragma omp for schedule(dynamic, 1)
      for (size_t i = 0; i < windows.size(); ++i)
        if (dist::mine(i)) scores[i] = score_window(m, st, stream, windows[i], bos, input);
    }
  } else {
    RunState st(m.config, W);
    std::vector<int32_t> input;
    for (size_t i = 0; i < windows.size(); ++i)
      if (dist::mine(i)) scores[i] = score_window(m, st, stream, windows[i], bos, input);
  }
  // Under MPI each rank scored its share of the windows (dist::mine); every rank now gets
  // every window's score, and the sums below run in window order as in one process.
  dist::gather_owned(scores);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<int32_t> scored_ids;  // for the byte count, BOS excluded
  for (size_t i = 0; i < windows.size(); ++i) {
    r.nll_sum += scores[i].nll;
    r.tokens_scored += scores[i].n;
    for (size_t p = windows[i].score_from; p < windows[i].e; ++p)
      if (stream[p] != bos) scored_ids.push_back(stream[p]);
  }
  r.windows = int64_t(windows.size());
  r.bytes_scored = int64_t(tok.decode(scored_ids).size());
  return r;
}

}  // namespace kvscope
