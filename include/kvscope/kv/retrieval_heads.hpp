// Retrieval-head detection (paper B, RazorAttention Sec. 3): a probe of BOS followed by one
// block of random token ids repeated R times. For a query at position i inside a repeat,
// the earlier copies of its token sit at j = i - B, i - 2B, ... (B = block length):
//   echo(i)      = sum_j A[i, j]       attention to the earlier copies of the same token
//   induction(i) = sum_j A[i, j + 1]   attention to the token that followed them
// A head's score is the mean over every such i; a KV head's is the max over the query heads
// that share it. Scores accumulate per block of attention rows (HeadScorer is a forward
// observer), so no [S, S] matrix is ever held.
#pragma once

#include <cstdint>
#include <vector>

#include "kvscope/model/model.hpp"
#include "kvscope/runtime/forward.hpp"

namespace kvscope {

struct ProbeSpec {
  int block = 0;      // B: tokens per random block
  int repeats = 4;    // R: copies of the block after BOS
  uint64_t seed = 0;  // random ids
  int token_lo = 0;   // ids drawn from [token_lo, token_hi)
  int token_hi = 0;
};

// [1 + R * B]: bos, then the block R times. The block's ids are distinct when the id range
// allows it (so "the earlier copy of this token" is unique per repeat), drawn with
// replacement otherwise. Deterministic in the seed.
std::vector<int32_t> make_probe(int32_t bos, const ProbeSpec& p);

struct HeadScores {
  int n_layers = 0, n_heads = 0, n_kv_heads = 0;
  std::vector<double> echo, induction;  // [n_layers * n_heads]
  // Mean attention of the same queries to the position just before them: the
  // previous-token head an induction circuit reads through ([n_layers * n_heads]).
  std::vector<double> previous;
  std::vector<double> kv_echo, kv_induction;         // [n_layers * n_kv_heads], max over the group
  std::vector<int> kv_echo_from, kv_induction_from;  // query head giving the max
  int64_t queries = 0;                               // query positions averaged per head
  // Noise (probe_heads with probes >= 2): the standard error of each score across the
  // independent probes, sd / sqrt(probes); NaN with one probe. kv_*_se are those of the
  // query head giving the KV head's max.
  int probes = 1;
  std::vector<double> echo_se, induction_se;        // [n_layers * n_heads]
  std::vector<double> kv_echo_se, kv_induction_se;  // [n_layers * n_kv_heads]
};

// What a head attending evenly to every visible token would score (echo and induction
// alike): the mean over the scored queries i of (earlier copies of i's token) / (i + 1).
double uniform_score(const ProbeSpec& p);

// Whether any head stands out of the uniform level by more than its noise: a KV head is
// "above uniform" when its induction or echo score exceeds uniform_score by more than
// `z` standard errors (z = 3: the best of dozens of heads is taken, so 2 would flag one
// head in a few by chance). With one probe there is no noise estimate (known = false).
struct RetrievalEvidence {
  bool known = false;             // noise estimated (probes >= 2)
  int heads_above = 0;            // KV heads above uniform by more than z SE
  std::vector<uint8_t> above;     // [n_layers * n_kv_heads]
  double best_induction_z = 0.0;  // (score - uniform) / se of the best-scoring KV head
  double best_echo_z = 0.0;
};
RetrievalEvidence retrieval_evidence(const HeadScores& s, double uniform, double z = 3.0);

// Observer for one forward pass over a probe from position 0 (a full cache, so slot j is
// position j). Thread-safe the way ForwardObserver::on_attention is called: one writer per
// head.
class HeadScorer : public ForwardObserver {
 public:
  HeadScorer(int n_layers, int n_heads, int n_kv_heads, int block);
  bool wants_attention() const override { return true; }
  void on_attention(const AttentionRows& r) override;
  HeadScores scores() const;
  // The running sums (per query head), to split scores by probe.
  struct Sums {
    std::vector<double> echo, induction, previous;
    std::vector<int64_t> count;
  };
  Sums sums() const { return {echo_, ind_, prev_, count_}; }
  // Adds sums taken elsewhere (another probe's scorer, another rank's).
  void add(const Sums& s);

 private:
  int n_layers_, n_heads_, n_kv_, block_;
  std::vector<double> echo_, ind_, prev_;  // [n_layers * n_heads] sums
  std::vector<int64_t> count_;             // [n_layers * n_heads] queries summed
};

struct HeadSelection {
  double induction_share = 0.14;  // top share of all KV heads by induction score
  double echo_share = 0.01;       // top share by echo score
  // When >= 0, absolute thresholds replace the shares: a KV head is selected when its
  // score is at least the threshold.
  double induction_threshold = -1.0;
  double echo_threshold = -1.0;
};

// How many of n heads a share selects: ceil(share * n) (a positive share keeps at least
// one head), at most n.
int heads_for_share(double share, int n);

// [n_layers * n_kv_heads] 1 = retrieval head: top induction union top echo, ranking every
// KV head of the model together (ties: the earlier layer, then head, wins).
std::vector<uint8_t> select_retrieval_heads(const HeadScores& s, const HeadSelection& sel);

// `count` distinct KV heads of `total` chosen uniformly at random (the ablation baseline).
std::vector<uint8_t> random_heads(int total, int count, uint64_t seed);

}  // namespace kvscope

namespace kvscope {

struct ProbeOptions {
  int block = 0;    // 0: (context - 1) / repeats, so the probe fills the trained context
  int repeats = 4;  // copies of the block
  int probes = 1;   // independent random blocks (seeds seed, seed+1, ...), scores averaged
  uint64_t seed = 0;
  int token_lo = -1;  // -1: one past the highest of BOS / EOS ids
  int token_hi = 0;   // 0: the vocabulary size
};

// The lowest id a probe (or a training block of random ids) draws from by default: one
// past the highest of BOS / EOS, so neither can appear inside a block.
int default_token_lo(const ModelConfig& c);

// The block length, id range and seeds `o` resolves to on `m` (throws naming the key when
// the probe does not fit the model's context or vocabulary).
ProbeSpec resolve_probe(const Model& m, const ProbeOptions& o, int probe_index);

// Runs every probe through `m` with a HeadScorer: scores averaged over all probe queries.
// With `copy_nll`, the same passes also say whether the model copies, whatever head does
// it: copy_nll receives the mean NLL (nats) of the tokens of each copy r of the probe's
// block (positions 1 + r B .. (r + 1) B, each predicted from the logits one position
// earlier), averaged over the probes: [repeats]. Copy 0 cannot be predicted from context
// (about log(token range) for a model that has learnt nothing about the ids); copies 1..
// can, by copying.
HeadScores probe_heads(const Model& m, const ProbeOptions& o,
                       std::vector<double>* copy_nll = nullptr);

// The probe's verdict on a whole model (train's and kv_head_reduction's induction.csv):
// the KV head with the highest induction score, the uniform level, the best echo and
// previous-token scores, and the copy loss of the first copy against the later ones.
struct InductionSummary {
  double best_induction = 0, uniform = 0, best_echo = 0, best_previous = 0;
  int layer = 0, kv_head = 0, previous_layer = 0;
  double copy_first = 0, copy_later = 0;  // mean NLL (nats) of copy 1 / of copies 2..R
  double ratio() const { return best_induction / uniform; }
  double copy_drop() const { return 1 - copy_later / copy_first; }
};
InductionSummary summarize_induction(const Model& m, const ProbeOptions& o);

}  // namespace kvscope
