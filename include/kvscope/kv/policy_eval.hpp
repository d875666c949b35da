// Scoring cache policies on tasks (paper B's evaluation, scaled to the shipped models).
// Every task prefills a context with the full cache, compresses it with each policy, then
// decodes the task's remaining tokens one at a time through the compressed cache, so that
// every scored prediction comes from a compressed cache (none from the full prefill).
//
//   copy        a natural-text segment placed at a depth of a long context is repeated at
//               its end: next-token accuracy on the repeat (what induction heads do); a
//               baseline with a different first segment shows how much the copy helps
//   recall      "... there was a little girl named X." at a depth of a context of filler
//               text, then a cue; multiple choice among candidate names by log-probability
//   perplexity  windows of long text: prefill the first part, score the rest
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kvscope/kv/cache_policy.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope {

// A policy of an experiment before the prefill length is known: razor's recent window and
// the budget the baselines are matched to both depend on it.
struct PolicySpec {
  std::string name;  // full, streaming, razor, razor_no_comp, razor_no_echo, ...
  PolicyKind kind = PolicyKind::kFull;
  bool compensation = true;              // razor
  std::vector<uint8_t> protected_heads;  // razor: [n_layers * n_kv_heads]
  std::vector<uint8_t> budget_heads;     // streaming / h2o: match razor with these heads
};

struct PolicyParams {
  int n_sink = 4;  // N0
  int s0 = 32;     // razor's minimum recent window
  double c = 5.0;  // razor keeps max(s0, N / c) recent tokens
};

// The CachePolicy for a prefill of n tokens. streaming and h2o get razor's average slots
// per head (sinks + recent + compensation, full heads counted whole) for budget_heads.
CachePolicy resolve_policy(const PolicySpec& s, const PolicyParams& p, int n);

// What a task compares: `count` variants, made for each prefill length n by `at(n)` (paper
// B sizes its budgets from n; the frontier's shares scale with it).
struct TaskVariants {
  size_t count = 0;
  std::function<std::vector<Variant>(int n)> at;
  uint64_t seed = 0;  // for methods that draw (random)
  // Recorded while prefilling: the union of the variants' needs.
  PolicyNeeds needs;
  int elem_bytes = 4;  // bytes per stored K/V element in the byte accounting
};

// Paper B's policies (PolicySpec) as task variants on a model with config c.
TaskVariants paper_b_variants(const std::vector<PolicySpec>& specs, const PolicyParams& p,
                              const ModelConfig& c);

// Prefills `prefill` once (recording what the variants need), then for each variant: a
// copy of the state, compressed, handed to `fn(index, run)` with room for `extra` more
// tokens. Returns, per variant, its kv_share after fn returns (NaN, and fn not called, for
// a variant whose share its method cannot reach).
std::vector<double> for_each_variant(const Model& m, std::span<const int32_t> prefill, int extra,
                                     const std::vector<Variant>& variants, const TaskVariants& tv,
                                     const std::function<void(size_t, CompressedRun&)>& fn);

struct CopyTask {
  int context = 0;                          // tokens incl. BOS; 0 = the model's context
  int segment = 32;                         // tokens copied
  std::vector<double> depths = {0.1, 0.5};  // share of the filler before the first copy
  int trials = 8;
};

struct TaskScore {
  double score = 0.0;     // accuracy (copy, recall) or perplexity
  double aux = 0.0;       // copy: baseline accuracy without the first copy; recall: mean
                          // rank of the true name (1 = best); perplexity: mean NLL
  double kv_share = 0.0;  // bytes kept / full cache bytes (the variant's definition)
  int64_t count = 0;      // predictions (copy, perplexity) or questions (recall)
  // Per item (trial, question or window) x = its own score (perplexity: its mean NLL),
  // and d = x minus the first variant's x on the same item (paired): sums for errors.
  int64_t items = 0;
  double sx = 0.0, sxx = 0.0, sd = 0.0, sdd = 0.0;
  double se() const;           // standard error of the mean of x over items
  double paired_mean() const;  // mean of d
  double paired_se() const;    // its standard error
};

// The window the copy task uses on a model with config c.
int copy_context(const CopyTask& t, const ModelConfig& c);

// Per depth, per policy. `stream`: filler and segments, natural text tokens (no BOS); trial
// i of depth d takes the passage at offset (d * trials + i) * (L - 1), wrapping. With
// `items`, per depth each trial's accuracy per policy ([trials x policies], NaN: out of
// reach), to pair any two policies.
std::vector<std::vector<TaskScore>> run_copy(const Model& m, std::span<const int32_t> stream,
                                             const CopyTask& t, const TaskVariants& v,
                                             std::vector<std::vector<double>>* items = nullptr);

struct RecallTask {
  std::vector<int> lengths;  // context lengths; [] = the model's context
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  std::vector<std::string> names = {"Lily", "Tom", "Ben", "Sue", "Mia", "Max", "Tim", "Anna"};
  std::string needle = "Once upon a time, there was a little girl named {}.";
  std::string cue = "Then";  // the name is scored as the word after this
  int trials = 4;            // filler passages per (length, depth); each asks every name
};

struct RecallCell {
  int length = 0;
  double depth = 0.0;
  std::vector<TaskScore> scores;  // per policy
  // Each item's own value per policy, [items x policies] row-major (recall: 1 when the
  // question is answered right; passkey: the share of its ids predicted), NaN where the
  // policy is out of reach: pairs any two policies on the same items.
  std::vector<double> items;
};

// Per (length, depth), lengths outer. Lengths beyond the model's context, or too short for
// the needle and the cue, are left out (the caller sees which from the cells). Trial i of
// the k-th cell made takes its filler at offset (k * trials + i) * L of `stream`, wrapping
// round it (the same filler for every name asked and every policy).
std::vector<RecallCell> run_recall(const Model& m, const Tokenizer& tok,
                                   std::span<const int32_t> stream, const RecallTask& t,
                                   const TaskVariants& v);

// The needle test with a passkey, in kind: `key` random ids (distinct, from [token_lo,
// token_hi), none of them in the trial's filler) planted at `depth` of a filler context of
// `length` tokens; at the end the first id is given again and the rest are predicted one
// at a time (teacher-forced) through the compressed cache. What one-token matching can
// retrieve: the first id occurs only in the passkey, so the circuit of an induction head
// finds it, whatever the model knows about the text around it.
struct PasskeyTask {
  std::vector<int> lengths;  // context tokens incl. BOS; [] = the model's context
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int key = 16;                     // passkey ids
  int token_lo = -1, token_hi = 0;  // -1: one past BOS / EOS; 0: the vocabulary size
  int trials = 8;                   // passkeys (and filler passages) per (length, depth)
  uint64_t seed = 0;
  // Multi-key needle: this many other passkeys (their own ids) at depths (j + 1/2) / d of
  // the filler; the one asked for is the one at the cell's depth.
  int distractors = 0;
};

// The passkey ids' range [lo, hi) on a model with config c (the defaults resolved).
std::pair<int, int> passkey_ids(const PasskeyTask& t, const ModelConfig& c);

// Per (length, depth), lengths outer: score = accuracy over the predicted ids, aux = share
// of passkeys with every id right, count = predictions (key - 1 per passkey). Lengths
// beyond the model's context or too short for two passkeys are left out. Fillers as
// run_recall's: trial i of the k-th cell at offset (k * trials + i) * L, wrapping.
std::vector<RecallCell> run_passkey(const Model& m, std::span<const int32_t> stream,
                                    const PasskeyTask& t, const TaskVariants& v);

// Teacher-forced continuation after a compressed prefix, against the full cache: per
// variant the mean NLL of the next token, the mean KL(full || variant) of the next-token
// distributions and the share of steps whose top-1 token agrees with the full cache's.
// The first variant must be the full cache (the reference of KL, agreement and pairing).
struct ContinuationTask {
  int window = 0;         // tokens per window incl. BOS; 0 = the model's context
  double prefill = 0.75;  // share of each window prefilled before compression
  int windows = 16;       // consecutive, non-overlapping
};
struct ContinuationScore {
  TaskScore nll, kl, top1;  // score / count each; items = windows
};
std::vector<ContinuationScore> run_continuation(const Model& m, std::span<const int32_t> stream,
                                                const ContinuationTask& t, const TaskVariants& v);

struct PerplexityTask {
  int window = 0;         // tokens per window incl. BOS; 0 = the model's context
  double prefill = 0.75;  // share of each window prefilled before compression
  int windows = 16;       // consecutive, non-overlapping
};

// The window, and the tokens of it prefilled before compression, on a model with config c.
int perplexity_window(const PerplexityTask& t, const ModelConfig& c);
int perplexity_prefill(const PerplexityTask& t, int window);

// Per policy. With `items`, each window's mean NLL per policy, [windows x policies].
std::vector<TaskScore> run_policy_perplexity(const Model& m, std::span<const int32_t> stream,
                                             const PerplexityTask& t, const TaskVariants& v,
                                             std::vector<double>* items = nullptr);

}  // namespace kvscope
