// Training loop: AdamW (decoupled weight decay on matrices, none on norms), linear warm-up
// then cosine decay, global-norm gradient clipping, float32, threads over the sequences of
// a batch (a fixed assignment, so the same thread count gives the same numbers), fixed
// seeds. Sequences are [BOS] + seq_len - 1 tokens from random offsets of a token stream.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <vector>

#include "kvscope/train/train_model.hpp"

namespace kvscope::train {

// Sequences made of one block of random token ids repeated to fill the window: [BOS] +
// block + block + ... cut at seq_len. Nothing but copying predicts them after the first
// copy, so they are the data on which induction heads form (RazorAttention's probe is the
// same shape). The ids of a block are distinct when the range allows, as in make_probe.
struct RandomBlocks {
  double share = 0.0;              // share of each batch's sequences, drawn per sequence
  int min_len = 0, max_len = 0;    // block length, uniform in [min_len, max_len]
  int token_lo = 0, token_hi = 0;  // ids uniform in [token_lo, token_hi)
  int seq_len = 0;                 // tokens per block sequence; 0 = TrainOptions::seq_len
  // Share of the block sequences that are instead a text window with one block written
  // twice at random places (a passkey in natural text, told twice): copying in a context
  // that is not random ids, which pure block sequences never show.
  double embedded = 0.0;
};

struct TrainOptions {
  int steps = 1000;
  int batch = 8;         // sequences per step
  int seq_len = 256;     // tokens per sequence, BOS included
  double lr = 1e-3;      // peak learning rate
  double min_lr = 1e-4;  // end of the cosine
  int warmup = 100;      // steps of linear warm-up
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double clip = 1.0;  // max global gradient norm; 0 = no clipping
  uint64_t seed = 0;
  // Share of each batch's sequences in which a passage of the window (1/8 to 1/2 of it)
  // is copied over a later stretch, at a random distance: in-context copying that natural
  // text rarely asks for, and what induction heads do. 0 leaves the batches exactly as
  // without the option.
  double repeat_share = 0.0;
  RandomBlocks random_blocks;  // share 0: batches exactly as without the option
  // Which parameters train: all when empty, else [L.size] flags (1 = trains).
  std::vector<uint8_t> trainable;
};

// Learning rate at `step` (0-based): warm-up from lr/warmup to lr, then cosine to min_lr.
double learning_rate(const TrainOptions& o, int step);

struct AdamState {
  std::vector<float> m, v;  // [L.size]
  int64_t step = 0;         // updates done
};

// One AdamW update of w with gradient g (already averaged over the batch).
void adamw_step(const Layout& L, const TrainOptions& o, double lr, std::span<float> w,
                std::span<const float> g, AdamState& st);

struct StepStats {
  int step = 0;
  double loss = 0, grad_norm = 0, lr = 0, seconds = 0;
  int64_t tokens = 0;
};

// The batch of `step`: `batch` windows of `stream`, deterministic in (seed, step); with
// repeat_share > 0, that share of them (drawn per sequence) repeat one of their passages.
// With random_blocks.share > 0, that share of them (drawn per sequence, from a stream of
// its own) are random-token blocks repeated instead (or, random_blocks.embedded of those,
// text windows holding one block twice); `block_tokens` (if given) counts the tokens of
// the block sequences (BOS included) plus the block tokens of the embedded ones.
std::vector<std::vector<int32_t>> batch_at(std::span<const int32_t> stream, int32_t bos,
                                           const TrainOptions& o, int step,
                                           int64_t* block_tokens = nullptr);
// One random block sequence of seq_len tokens: bos + the block of length len from `seed`
// repeated (deterministic in seed).
std::vector<int32_t> random_block_sequence(int32_t bos, const RandomBlocks& rb, int seq_len,
                                           int len, uint64_t seed);

// Mean loss and gradient of a batch (threads over sequences), then clip and AdamW.
StepStats train_step(const Layout& L, const TrainOptions& o, std::span<float> w, AdamState& st,
                     const std::vector<std::vector<int32_t>>& batch, int step);

// Mean NLL over `seqs` (no gradient), threads over sequences.
double mean_loss(const Layout& L, std::span<const float> w,
                 const std::vector<std::vector<int32_t>>& seqs);

// Consecutive windows [BOS] + stream[..] of seq_len tokens covering up to `tokens` tokens:
// a fixed held-out set.
std::vector<std::vector<int32_t>> heldout_windows(std::span<const int32_t> stream, int32_t bos,
                                                  int seq_len, int64_t tokens);

}  // namespace kvscope::train
