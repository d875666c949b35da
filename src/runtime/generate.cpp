#include "kvscope/runtime/generate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "kvscope/io/error.hpp"
#include "kvscope/runtime/forward.hpp"

namespace kvscope {

int32_t argmax(const float* logits, int n) {
  return int32_t(std::max_element(logits, logits + n) - logits);
}

namespace {

int32_t sample(const float* logits, int n, float temperature, float top_p, std::mt19937_64& rng) {
  if (temperature <= 0.0f) return argmax(logits, n);
  std::vector<double> p(static_cast<size_t>(n));
  const double mx = *std::max_element(logits, logits + n);
  double z = 0.0;
  for (int i = 0; i < n; ++i) z += p[size_t(i)] = std::exp((logits[i] - mx) / temperature);
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  // Most likely first; stable so equal probabilities keep index order (reproducible).
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)]; });
  double mass = 0.0;
  size_t keep = 0;
  while (keep < order.size() && (keep == 0 || mass < top_p * z)) mass += p[size_t(order[keep++])];
  // Draw from the kept prefix with a uniform number: the same seed gives the same text.
  const double u = std::uniform_real_distribution<double>(0.0, mass)(rng);
  double acc = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[size_t(order[i])];
    if (u < acc) return order[i];
  }
  return order[keep - 1];
}

// A config.json that lists several end-of-sequence ids (Llama 3) ends a sequence at any of
// them, not only at the tokenizer's one.
bool ends_sequence(const Model& m, int32_t id) {
  const auto& more = m.config.more_eos_ids;
  if (more.empty()) return false;
  return id == m.config.eos_id || std::find(more.begin(), more.end(), id) != more.end();
}

}  // namespace

GenerateResult generate(const Model& m, const Tokenizer& tok, const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text) {
  KV_CHECK(opt.max_tokens >= 0, "generate: max_tokens must be >= 0, got {}", opt.max_tokens);
  // An infinite temperature would sample uniformly; NaN would sample garbage.
  KV_CHECK(std::isfinite(opt.temperature) && opt.temperature >= 0.0f,
           "generate: temperature must be a finite number >= 0, got {}", opt.temperature);
  KV_CHECK(opt.top_p > 0.0f && opt.top_p <= 1.0f, "generate: top_p must be in (0, 1], got {}",
           opt.top_p);
  GenerateResult r;
  if (tok.sequence_bos() >= 0) r.prompt_ids.push_back(tok.sequence_bos());
  const std::vector<int32_t> p = tok.encode(opt.prompt);
  r.prompt_ids.insert(r.prompt_ids.end(), p.begin(), p.end());
  KV_CHECK(!r.prompt_ids.empty(),
           "generate: the prompt is empty and the tokenizer adds no BOS token to start from (give "
           "--prompt, or --bos where the tokenizer has one)");
  const int ctx = m.config.max_seq_len;
  KV_CHECK(int(r.prompt_ids.size()) < ctx, "generate: prompt of {} tokens fills the context of {}",
           r.prompt_ids.size(), ctx);
  // The cache holds what this call will hold (prompt and new tokens), not the model's
  // whole context: a 16M-token context must not cost gigabytes for a few tokens.
  const int capacity = int(std::min<int64_t>(ctx, int64_t(r.prompt_ids.size()) + opt.max_tokens));
  RunState st(m.config, std::max(capacity, 1));
  std::mt19937_64 rng(opt.seed);
  const int V = m.config.vocab_size;

  auto t0 = std::chrono::steady_clock::now();
  auto logits = forward(m, st, r.prompt_ids, {LogitsMode::kLast});
  auto t1 = std::chrono::steady_clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  std::vector<int32_t> all = r.prompt_ids;
  // Streaming without decoding the whole sequence at every step (quadratic in the length:
  // 15% of a 256-token generation with a SentencePiece tokenizer). A step's new text is
  // the decoding of all[from:] minus that of all[from:read], the ids up to what was
  // already handed out; both start at the same id, so the tokenizer's treatment of a
  // leading space is the same in both. Starting a few prompt ids back gives the first
  // piece its context. A step whose text ends in U+FFFD (an incomplete UTF-8 character)
  // waits for the next id.
  size_t read = all.size(), from = read > 6 ? read - 6 : 0;
  std::string streamed;  // what on_text has been given
  const auto span_of = [&](size_t a, size_t b) {
    return std::span<const int32_t>(all.data() + a, b - a);
  };
  while (int(r.new_ids.size()) < opt.max_tokens) {
    const int32_t next = sample(logits.data(), V, opt.temperature, opt.top_p, rng);
    if (next == tok.eos_id || (tok.bos_id >= 0 && next == tok.bos_id) || ends_sequence(m, next))
      break;
    r.new_ids.push_back(next);
    all.push_back(next);
    if (on_text) {
      const std::string before = tok.decode(span_of(from, read));
      const std::string now = tok.decode(span_of(from, all.size()));
      const bool incomplete =
          now.size() >= 3 && now.compare(now.size() - 3, 3, "\xEF\xBF\xBD") == 0;
      if (now.size() > before.size() && now.compare(0, before.size(), before) == 0 && !incomplete) {
        const std::string piece = now.substr(before.size());
        on_text(piece);
        streamed += piece;
        from = read;
        read = all.size();
      }
    }
    // The last token's logits would never be used.
    if (int(r.new_ids.size()) >= opt.max_tokens || st.pos >= st.cache.capacity()) break;
    logits = forward(m, st, std::span<const int32_t>(&all.back(), 1), {LogitsMode::kLast});
  }
  // The text from one decoding of the whole sequence, as if decoded at once: the
  // continuation after the prompt's text, or (rarely, when the joined decoding rewrites
  // the prompt's tail) the new ids decoded alone.
  const std::string prompt_text = tok.decode(r.prompt_ids);
  const std::string text = tok.decode(all);
  const bool extends =
      text.size() >= prompt_text.size() && text.compare(0, prompt_text.size(), prompt_text) == 0;
  r.text = extends ? text.substr(prompt_text.size()) : tok.decode(r.new_ids);
  // Hand out what the stream held back (a last incomplete character); a stream that the
  // whole decoding contradicts cannot be taken back.
  if (on_text && r.text.size() > streamed.size() &&
      r.text.compare(0, streamed.size(), streamed) == 0)
    on_text(r.text.substr(streamed.size()));
  r.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  return r;
}

}  // namespace kvscope
