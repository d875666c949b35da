#include "kvscope/perplexity.hpp"

#include <chrono>
#include <cmath>

#include "kvscope/error.hpp"
#include "kvscope/forward.hpp"

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
    if (tok.add_bos && tok.bos_id >= 0) s.push_back(tok.bos_id);
    const std::vector<int32_t> ids = tok.encode(d);
    s.insert(s.end(), ids.begin(), ids.end());
  }
  return s;
}

double token_nll(std::span<const float> logits, int32_t target) {
  double mx = logits[0];
  for (float v : logits) mx = std::max(mx, double(v));
  double z = 0.0;
  for (float v : logits) z += std::exp(double(v) - mx);
  return mx + std::log(z) - double(logits[size_t(target)]);
}

PerplexityResult perplexity(const Model& m, const Tokenizer& tok, std::span<const int32_t> stream,
                            const PerplexityOptions& opt) {
  PerplexityResult r;
  const int W = opt.window > 0 ? opt.window : m.config.max_seq_len;
  const int S = opt.stride > 0 ? opt.stride : std::max(1, W / 2);
  KV_CHECK(W >= 2, "perplexity: window must be at least 2 tokens, got {}", W);
  KV_CHECK(S <= W - 1, "perplexity: stride {} must be at most window - 1 = {}", S, W - 1);
  r.window = W;
  r.stride = S;
  const int32_t bos = tok.bos_id;
  size_t N = stream.size();
  if (opt.max_tokens > 0 && N > size_t(opt.max_tokens) + 1) N = size_t(opt.max_tokens) + 1;
  if (N < 2) return r;

  RunState st(m.config, W);
  std::vector<int32_t> input;
  std::vector<int32_t> scored_ids;  // for the byte count, BOS excluded
  const auto t0 = std::chrono::steady_clock::now();
  size_t prev_end = 1;  // position 0 (the first BOS or token) is never a target
  while (prev_end < N) {
    const size_t e = r.windows == 0 ? std::min(N, size_t(W)) : std::min(N, prev_end + size_t(S));
    // Input window ending at e: W tokens, starting with BOS.
    input.clear();
    size_t b;
    if (e <= size_t(W)) {
      b = 0;  // the start of the stream fits: no BOS is invented
    } else {
      b = e - size_t(W);
      if (bos < 0 || stream[b] != bos) {
        ++b;
        if (bos >= 0) input.push_back(bos);
      }
    }
    const size_t offset = input.size();  // input index i holds stream[b + i - offset]
    input.insert(input.end(), stream.begin() + long(b), stream.begin() + long(e));
    st.reset();
    const auto logits = forward(m, st, input);
    const size_t V = size_t(m.config.vocab_size);
    for (size_t p = prev_end; p < e; ++p) {
      if (stream[p] == bos) continue;
      const size_t row = p - b + offset - 1;  // the input row that predicts stream[p]
      r.nll_sum += token_nll(logits.subspan(row * V, V), stream[p]);
      ++r.tokens_scored;
      scored_ids.push_back(stream[p]);
    }
    ++r.windows;
    prev_end = e;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.bytes_scored = int64_t(tok.decode(scored_ids).size());
  return r;
}

}  // namespace kvscope
