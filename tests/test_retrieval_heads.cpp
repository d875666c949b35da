// Retrieval-head scores: on hand-built attention rows (exact 1/0 answers), and block-wise
// through the forward pass against a full [T, T] computation from the naive reference.
#include <catch2/catch.hpp>
#include <set>

#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/runtime/forward.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

// Feeds `scorer` rows for a sequence of 1 + R*B tokens, query blocks of qb rows: head 0
// splits each row over the earlier copies of the query's token (an echo head), head 1 over
// the tokens after them (an induction head), head 2 attends only to BOS, head 3 to the
// position just before the query (a previous-token head).
void feed_pattern(HeadScorer& scorer, int B, int R, int qb) {
  const int T = 1 + R * B;
  for (int head = 0; head < 4; ++head)
    for (int t0 = 0; t0 < T; t0 += qb) {
      const int nq = std::min(qb, T - t0), nk = t0 + nq;
      std::vector<float> w(size_t(nq) * nk, 0.0f);
      for (int i = 0; i < nq; ++i) {
        const int pos = t0 + i;
        float* row = w.data() + size_t(i) * nk;
        std::vector<int> targets;
        if (head < 2)
          for (int j = pos - B; j >= 1; j -= B) targets.push_back(head == 0 ? j : j + 1);
        if (head == 3 && pos >= 1) targets.push_back(pos - 1);
        if (targets.empty()) targets.push_back(0);
        for (int j : targets) row[j] += 1.0f / float(targets.size());
      }
      scorer.on_attention({0, head, t0, nq, nk, w.data()});
    }
}

}  // namespace

TEST_CASE("echo and induction scores on hand-built attention", "[retrieval]") {
  const int B = 7, R = 4;
  for (int qb : {1, 5, 64}) {
    HeadScorer scorer(1, 4, 4, B);
    feed_pattern(scorer, B, R, qb);
    const HeadScores s = scorer.scores();
    // Exact up to float sums of 1/k (k <= 3): tolerance 1e-6.
    CHECK(s.echo[0] == Approx(1.0).margin(1e-6));
    CHECK(s.induction[0] == Approx(0.0).margin(1e-6));
    CHECK(s.echo[1] == Approx(0.0).margin(1e-6));
    CHECK(s.induction[1] == Approx(1.0).margin(1e-6));
    CHECK(s.echo[2] == Approx(0.0).margin(1e-6));
    CHECK(s.induction[2] == Approx(0.0).margin(1e-6));
    CHECK(s.previous[3] == Approx(1.0).margin(1e-6));  // B = 7: i - 1 is never a copy
    for (int h = 0; h < 3; ++h) CHECK(s.previous[size_t(h)] == Approx(0.0).margin(1e-6));
    CHECK(s.echo[3] == Approx(0.0).margin(1e-6));
    CHECK(s.queries == (R - 1) * B);
  }
}

TEST_CASE("KV-head scores take the max over the query heads sharing it", "[retrieval]") {
  HeadScorer scorer(1, 4, 2, 7);  // heads 0,1 -> KV 0; heads 2,3 -> KV 1 (head 3 silent)
  feed_pattern(scorer, 7, 3, 8);
  std::vector<float> w(size_t(22) * 22, 0.0f);
  for (int i = 0; i < 22; ++i) w[size_t(i) * 22] = 1.0f;
  scorer.on_attention({0, 3, 0, 22, 22, w.data()});
  const HeadScores s = scorer.scores();
  CHECK(s.kv_echo[0] == Approx(1.0).margin(1e-6));
  CHECK(s.kv_echo_from[0] == 0);
  CHECK(s.kv_induction[0] == Approx(1.0).margin(1e-6));
  CHECK(s.kv_induction_from[0] == 1);
  CHECK(s.kv_echo[1] == Approx(0.0).margin(1e-6));
}

TEST_CASE("block-wise scores through the forward pass equal a full-matrix computation",
          "[retrieval][model]") {
  const Model m = load_model(test::stories260k());
  const ModelConfig& c = m.config;
  ProbeSpec p;
  p.block = 11, p.repeats = 3, p.seed = 5, p.token_lo = 3, p.token_hi = c.vocab_size;
  const std::vector<int32_t> probe = make_probe(c.bos_id, p);
  REQUIRE(probe.size() == 34);
  const test::ReferenceRun ref = test::reference_forward(m, probe);
  const int T = int(probe.size());
  for (int qb : {1, 4, 64}) {
    HeadScorer scorer(c.n_layers, c.n_heads, c.n_kv_heads, p.block);
    RunState st(c, T);
    ForwardOptions opt;
    opt.observer = &scorer;
    opt.query_block = qb;
    forward(m, st, probe, opt);
    const HeadScores s = scorer.scores();
    for (int l = 0; l < c.n_layers; ++l)
      for (int h = 0; h < c.n_heads; ++h) {
        const double* A = ref.attn[size_t(l)].data() + size_t(h) * T * T;  // [T, T]
        double e = 0, ind = 0;
        int n = 0;
        for (int i = 1 + p.block; i < T; ++i, ++n)
          for (int j = i - p.block; j >= 1; j -= p.block) {
            e += A[size_t(i) * T + j];
            ind += A[size_t(i) * T + j + 1];
          }
        // float attention against the double reference: 1e-5 absolute on a mean of weights.
        const size_t k = size_t(l) * c.n_heads + h;
        CHECK(s.echo[k] == Approx(e / n).margin(1e-5));
        CHECK(s.induction[k] == Approx(ind / n).margin(1e-5));
      }
  }
}

TEST_CASE("probe: BOS then one block repeated, distinct ids when the range allows", "[retrieval]") {
  ProbeSpec p;
  p.block = 50, p.repeats = 4, p.seed = 9, p.token_lo = 3, p.token_hi = 60;
  const std::vector<int32_t> t = make_probe(1, p);
  REQUIRE(t.size() == 201);
  CHECK(t[0] == 1);
  std::set<int32_t> ids(t.begin() + 1, t.begin() + 51);
  CHECK(ids.size() == 50);
  CHECK(*ids.begin() >= 3);
  CHECK(*ids.rbegin() < 60);
  for (int i = 51; i < 201; ++i) CHECK(t[size_t(i)] == t[size_t(i - 50)]);
  CHECK(make_probe(1, p) == t);  // deterministic
  p.seed = 10;
  CHECK(make_probe(1, p) != t);
  p.token_hi = 13;  // 10 ids for a block of 50: with replacement, still in range
  for (int32_t id : make_probe(1, p)) CHECK((id == 1 || (id >= 3 && id < 13)));
}

TEST_CASE("selection: top shares union, thresholds, random heads", "[retrieval]") {
  HeadScores s;
  s.n_layers = 2, s.n_heads = 4, s.n_kv_heads = 4;  // 8 KV heads
  s.kv_induction = {0.1, 0.9, 0.3, 0.0, 0.8, 0.2, 0.0, 0.05};
  s.kv_echo = {0.0, 0.1, 0.0, 0.7, 0.0, 0.0, 0.2, 0.0};
  CHECK(heads_for_share(0.14, 8) == 2);  // ceil(1.12)
  CHECK(heads_for_share(0.01, 8) == 1);
  CHECK(heads_for_share(0.25, 20) == 5);
  CHECK(heads_for_share(0.0, 8) == 0);
  HeadSelection sel;  // 14% induction (heads 1, 4) + 1% echo (head 3)
  CHECK(select_retrieval_heads(s, sel) == std::vector<uint8_t>{0, 1, 0, 1, 1, 0, 0, 0});
  sel.induction_threshold = 0.25, sel.echo_threshold = 0.15;
  CHECK(select_retrieval_heads(s, sel) == std::vector<uint8_t>{0, 1, 1, 1, 1, 0, 1, 0});
  const std::vector<uint8_t> r = random_heads(8, 3, 4);
  CHECK(std::count(r.begin(), r.end(), 1) == 3);
  CHECK(random_heads(8, 3, 4) == r);
}

TEST_CASE("uniform level and evidence of heads above it, by hand", "[retrieval]") {
  // Block 2, 2 repeats: queries i = 3, 4 (positions of the second copy) see (i - 1) / 2 = 1
  // earlier copy among i + 1 tokens: (1/4 + 1/5) / 2 = 0.225.
  ProbeSpec p;
  p.block = 2, p.repeats = 2;
  CHECK(uniform_score(p) == Approx(0.225).epsilon(1e-12));
  HeadScores s;
  s.n_layers = 1, s.n_heads = 3, s.n_kv_heads = 3;
  s.kv_induction = {0.30, 0.25, 0.10};
  s.kv_echo = {0.10, 0.10, 0.40};
  s.kv_induction_se = {0.02, 0.02, 0.01};  // z = 3.75, 1.25, < 0
  s.kv_echo_se = {0.01, 0.01, 0.06};       // z < 0, < 0, 2.9167
  s.probes = 1;
  CHECK_FALSE(retrieval_evidence(s, 0.225).known);  // one probe: no noise estimate
  s.probes = 4;
  RetrievalEvidence ev = retrieval_evidence(s, 0.225);
  CHECK(ev.known);
  CHECK(ev.above == std::vector<uint8_t>{1, 0, 0});
  CHECK(ev.heads_above == 1);
  CHECK(ev.best_induction_z == Approx(3.75).epsilon(1e-12));
  CHECK(ev.best_echo_z == Approx(0.175 / 0.06).epsilon(1e-12));
  ev = retrieval_evidence(s, 0.225, 2.0);  // a looser z admits the echo head too
  CHECK(ev.above == std::vector<uint8_t>{1, 0, 1});
}

TEST_CASE("copy loss per repeat of the probe: the mean NLL of each copy's tokens", "[retrieval]") {
  // By hand from one forward pass per probe: token p of the probe is predicted from the
  // logits at p - 1 with log-sum-exp in double; copy r holds positions 1 + r B .. (r+1) B.
  const Model m = load_model(test::stories260k());
  ProbeOptions o;
  o.block = 20, o.repeats = 3, o.probes = 2, o.seed = 5;
  std::vector<double> got;
  const HeadScores with = probe_heads(m, o, &got);
  CHECK(with.induction == probe_heads(m, o).induction);  // the logits change no score
  REQUIRE(got.size() == 3);
  std::vector<double> want(3, 0.0);
  const int V = m.config.vocab_size;
  for (int i = 0; i < 2; ++i) {
    const std::vector<int32_t> p = make_probe(m.config.bos_id, resolve_probe(m, o, i));
    REQUIRE(p.size() == 61);
    RunState st(m.config, 61);
    const auto lg = forward(m, st, p);
    for (int pos = 1; pos < 61; ++pos) {
      const float* z = lg.data() + size_t(pos - 1) * V;
      double mx = z[0], s = 0;
      for (int v = 0; v < V; ++v) mx = std::max(mx, double(z[v]));
      for (int v = 0; v < V; ++v) s += std::exp(double(z[v]) - mx);
      want[size_t((pos - 1) / 20)] += (mx + std::log(s) - z[p[size_t(pos)]]) / 40.0;
    }
  }
  for (int r = 0; r < 3; ++r) CHECK(got[size_t(r)] == Approx(want[size_t(r)]).epsilon(1e-12));
  // stories260K has no induction heads: later copies are not much easier than the first.
  CHECK(got[1] > 0.5 * got[0]);
}
