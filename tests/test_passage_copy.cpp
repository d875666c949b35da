// The natural-passage copy measurement (kv/passage_copy.hpp, the test bed of issue 35):
// windows built by hand from the documented formula and scored by the naive double
// reference, against passage_copy's per-window NLLs; and the drop and its SE by hand.
#include <catch2/catch.hpp>
#include <cmath>

#include "kvscope/kv/passage_copy.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;

TEST_CASE("passage copy: windows and NLLs as documented, against the naive reference",
          "[testbed]") {
  const LoadedModel lm = load_model_and_tokenizer(test::stories260k());
  const Model& m = lm.model;
  std::vector<int32_t> stream = token_stream(
      *lm.tokenizer,
      {test::slurp(std::string(KVSCOPE_TEST_DATA_DIR) + "/text/janeausten/persuasion.txt")});
  std::erase(stream, m.config.bos_id);
  PassageCopyOptions o;
  o.context = 96, o.length = 12, o.depth = 0.5, o.trials = 2;
  const PassageCopyResult r = passage_copy(m, stream, o);
  REQUIRE(r.first.size() == 2);
  // Window t: [BOS] + text[o, o + T), T = L - 1 - n, o = t L mod (|stream| - T + 1), the
  // passage text[o + a, o + a + n), a = round(0.5 (T - n)), appended at the end.
  const int L = 96, n = 12, T = L - 1 - n, a = int(std::lround(0.5 * (T - n)));
  CHECK(r.gap == T - a - n);
  const int V = m.config.vocab_size;
  auto nll = [&](const std::vector<double>& z, int p, int32_t target) {  // row p predicts p+1
    const double* row = z.data() + size_t(p) * V;
    double mx = *std::max_element(row, row + V), s = 0;
    for (int v = 0; v < V; ++v) s += std::exp(row[v] - mx);
    return mx + std::log(s) - row[target];
  };
  for (int t = 0; t < 2; ++t) {
    const size_t off = size_t(int64_t(t) * L % int64_t(stream.size() - T + 1));
    std::vector<int32_t> s{m.config.bos_id};
    s.insert(s.end(), stream.begin() + long(off), stream.begin() + long(off) + T);
    s.insert(s.end(), stream.begin() + long(off) + a, stream.begin() + long(off) + a + n);
    REQUIRE(int(s.size()) == L);
    const test::ReferenceRun ref = test::reference_forward(m, s);
    double first = 0, second = 0;
    for (int k = 1; k < n; ++k) {
      first += nll(ref.logits, a + k, s[size_t(1 + a + k)]);
      second += nll(ref.logits, L - n + k - 1, s[size_t(L - n + k)]);
    }
    // float32 forward against double: 1e-4 relative.
    CHECK(r.first[size_t(t)] == Approx(first / (n - 1)).epsilon(1e-4));
    CHECK(r.second[size_t(t)] == Approx(second / (n - 1)).epsilon(1e-4));
  }
}

TEST_CASE("passage copy: the drop and its standard error by hand", "[testbed]") {
  PassageCopyResult r;
  r.first = {2.0, 4.0, 3.0};
  r.second = {1.0, 1.0, 1.0};
  // Means 3 and 1: drop = 1 - 1/3. Ratio r = 1/3; e_t = s_t - f_t / 3 = 1/3, -1/3, 0; their
  // sd = 1/3, SE = sd / sqrt(3) / mean first = (1/3) / sqrt(3) / 3.
  CHECK(r.drop() == Approx(2.0 / 3.0));
  CHECK(r.drop_se() == Approx(1.0 / 3.0 / std::sqrt(3.0) / 3.0));
}
