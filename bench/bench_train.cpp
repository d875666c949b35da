// Training throughput: tokens/s and GFLOP/s of full steps (forward, backward, AdamW) next
// to the machine's own sgemm rate measured in the same run.
//
//   build/bench/bench_train [threads]
//
// FLOPs per sequence are counted as 3x the forward pass (the backward pass does two
// products for every one of the forward pass), attention over the causal half.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kvscope/runtime/threads.hpp"
#include "kvscope/train/trainer.hpp"

using namespace kvscope;
using namespace kvscope::bench;

int main(int argc, char** argv) {
  const int threads = set_threads(argc > 1 ? std::atoi(argv[1]) : 0);
  std::printf("threads: %d\nBLAS: %s\n", threads, blas_info().c_str());
  const double ceiling_before = sgemm_gflops(1024, 2048, 2048);
  struct Shape {
    const char* name;
    int dim, hidden, layers, heads, kv, ctx, vocab;
  };
  const Shape shapes[] = {
      {"MHA-8 d128 L4 ctx1024", 128, 352, 4, 8, 8, 1024, 512},
      {"GQA-8/2 d128 L4 ctx1024", 128, 352, 4, 8, 2, 1024, 512},
      {"d512 L4 ctx256", 512, 1376, 4, 8, 8, 256, 4096},
  };
  struct Row {
    std::string name;
    size_t params;
    double tps, gflops;
  };
  std::vector<Row> rows;
  for (const Shape& s : shapes) {
    ModelConfig c;
    c.dim = s.dim, c.hidden_dim = s.hidden, c.n_layers = s.layers, c.n_heads = s.heads;
    c.n_kv_heads = s.kv, c.head_dim = s.dim / s.heads, c.max_seq_len = s.ctx;
    c.vocab_size = s.vocab, c.rope_layout = RopeLayout::kRotateHalf, c.tied_embeddings = true;
    const train::Layout L = train::make_layout(c);
    std::vector<float> w = train::init_params(L, 1);
    train::TrainOptions o;
    o.batch = threads, o.seq_len = s.ctx, o.steps = 4, o.warmup = 1;
    std::vector<int32_t> stream(200000);
    std::mt19937 rng(3);
    for (auto& t : stream) t = 3 + int32_t(rng() % uint32_t(s.vocab - 3));
    train::AdamState st;
    train::train_step(L, o, w, st, train::batch_at(stream, 1, o, 0), 0);  // warm-up
    double best = 1e30;
    for (int step = 1; step < 4; ++step) {
      const double t0 = now_seconds();
      train::train_step(L, o, w, st, train::batch_at(stream, 1, o, step), step);
      best = std::min(best, now_seconds() - t0);
    }
    const double tokens = double(o.batch) * s.ctx;
    const double flops = 3.0 * prefill_flops(c, s.ctx, s.ctx) * o.batch;
    rows.push_back({s.name, L.size, tokens / best, flops / best / 1e9});
    std::fprintf(stderr, "measured %s\n", s.name);
  }
  const double ceiling = std::max(ceiling_before, sgemm_gflops(1024, 2048, 2048));
  std::printf("sgemm ceiling (1024x2048x2048, A*B^T): %.1f GFLOP/s\n\n", ceiling);
  std::printf("%-26s %9s | %9s %9s %7s\n", "model", "params", "tokens/s", "GFLOP/s", "%sgemm");
  for (const Row& r : rows)
    std::printf("%-26s %9zu | %9.0f %9.2f %6.1f%%\n", r.name.c_str(), r.params, r.tps, r.gflops,
                100.0 * r.gflops / ceiling);
  return 0;
}
