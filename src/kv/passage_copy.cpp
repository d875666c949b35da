#include "kvscope/kv/passage_copy.hpp"

#include <cmath>

#include "kvscope/io/error.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/perplexity.hpp"

namespace kvscope {

namespace {

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / double(v.size());
}

}  // namespace

double PassageCopyResult::mean_first() const {
  return mean(first);
}

double PassageCopyResult::mean_second() const {
  return mean(second);
}

double PassageCopyResult::drop() const {
  return 1.0 - mean_second() / mean_first();
}

double PassageCopyResult::drop_se() const {
  const size_t n = first.size();
  if (n < 2) return NAN;
  // drop = 1 - S / F (means); its linearisation per window is -(s_t - r f_t) / F, r = S / F.
  const double F = mean_first(), r = mean_second() / F;
  double m = 0, ss = 0;
  for (size_t t = 0; t < n; ++t) m += second[t] - r * first[t];
  m /= double(n);
  for (size_t t = 0; t < n; ++t) {
    const double e = second[t] - r * first[t] - m;
    ss += e * e;
  }
  return std::sqrt(ss / double(n - 1) / double(n)) / F;
}

PassageCopyResult passage_copy(const Model& m, std::span<const int32_t> stream,
                               const PassageCopyOptions& o) {
  const ModelConfig& c = m.config;
  PassageCopyResult out;
  const int L = o.context > 0 ? o.context : c.default_seq_len(), n = o.length;
  KV_CHECK(L <= c.max_seq_len, "passage copy: context {} exceeds the model's {}", L, c.max_seq_len);
  KV_CHECK(n >= 2 && L - 1 - 2 * n >= 0,
           "passage copy: two passages of {} tokens do not fit a context of {}", n, L);
  KV_CHECK(o.depth >= 0 && o.depth <= 1, "passage copy: depth {} is not in [0, 1]", o.depth);
  KV_CHECK(o.trials >= 1, "passage copy: trials must be >= 1, got {}", o.trials);
  const int T = L - 1 - n;  // text tokens of the window; the passage sits inside them
  KV_CHECK(int64_t(stream.size()) >= T, "passage copy: the text has {} tokens, a window needs {}",
           stream.size(), T);
  const int a = int(std::lround(o.depth * (T - n)));  // first occurrence: text[a, a + n)
  out.context = L, out.length = n, out.gap = T - a - n;
  const int64_t room = int64_t(stream.size()) - T + 1;
  RunState st(c, L);
  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  const size_t V = size_t(c.vocab_size);
  for (int tr = 0; tr < o.trials; ++tr) {
    const auto text = stream.subspan(size_t((int64_t(tr) * L) % room), size_t(T));
    std::vector<int32_t> s{c.bos_id};
    s.insert(s.end(), text.begin(), text.end());
    s.insert(s.end(), text.begin() + a, text.begin() + a + n);  // [L]
    st.reset();
    const std::span<const float> logits = forward(m, st, s, fo);  // [L, V]
    // Mean NLL of the occurrence's tokens 2..n, starting at sequence position p.
    auto occurrence = [&](int p) {
      double sum = 0;
      for (int k = 1; k < n; ++k)
        sum += token_nll(logits.subspan(size_t(p + k - 1) * V, V), s[size_t(p + k)]);
      return sum / double(n - 1);
    };
    out.first.push_back(occurrence(1 + a));
    out.second.push_back(occurrence(L - n));
  }
  return out;
}

}  // namespace kvscope
