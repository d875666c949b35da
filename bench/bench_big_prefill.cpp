// Loads a (big) checkpoint and runs one prefill, reporting load time, prefill time and
// the process's peak RSS: the check that a 7B-shaped BF16 model runs within 24 GiB
// with stored weights widened to f32 a block at a time when used. The rate is also given as a share
// of the machine's sgemm rate on the prefill's own shape (tokens x dim x dim), measured in the same
// run between the load and the prefill and after the prefill (the better one counts).
//   build/bench/bench_big_prefill MODEL_DIR [--tokens 512] [--threads 0] [--block-mib 32]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "bench_util.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/threads.hpp"

using namespace kvscope;
using namespace kvscope::bench;

int main(int argc, char** argv) {
  CLI::App app{"One prefill on a big checkpoint, with peak RSS"};
  std::string dir;
  int tokens = 512, threads = 0;
  double block_mib = double(ForwardOptions{}.widen_block_bytes) / (1 << 20);
  app.add_option("model", dir, "model directory or file")->required();
  app.add_option("--tokens", tokens, "prompt length");
  app.add_option("--threads", threads, "threads (0: all)");
  app.add_option("--block-mib", block_mib,
                 "MiB of float32 a stored matrix is widened into at a time, across the threads "
                 "(ForwardOptions::widen_block_bytes)");
  CLI11_PARSE(app, argc, argv);
  try {
    set_threads(threads);
    const double t0 = now_seconds();
    const Model m = load_model(dir);
    const double t_loaded = now_seconds();
    const int dim = m.config.dim;
    const double ceiling_before = sgemm_gflops(tokens, dim, dim, 5);
    // The KV cache (0.5 GB for LLaMA-2-7B at 512 tokens) is allocated and zeroed before
    // the clock starts, as a caller that reuses its RunState would have it; its time is
    // printed on its own.
    const double t_cache = now_seconds();
    RunState st(m.config, tokens);
    const double t1 = now_seconds();
    std::printf("loaded %s (%s) in %.2f s, peak RSS %.2f GiB\n", m.name.c_str(),
                std::string(dtype_name(m.weights.layers[0].wq.dtype)).c_str(), t_loaded - t0,
                peak_rss_bytes() / 1073741824.0);
    std::vector<int32_t> toks(static_cast<size_t>(tokens));
    for (int i = 0; i < tokens; ++i)
      toks[size_t(i)] = int32_t(3 + (i * 7919) % (m.config.vocab_size - 3));
    ForwardOptions opt;
    opt.logits = LogitsMode::kLast;
    opt.widen_block_bytes = size_t(block_mib * (1 << 20));
    const auto logits = forward(m, st, toks, opt);
    const double t2 = now_seconds();
    bool finite = true;
    for (float v : logits) finite = finite && std::isfinite(v);
    const double gf = prefill_flops(m.config, tokens, 1) / (t2 - t1) / 1e9;
    std::printf("KV cache for %d tokens allocated in %.2f s\n", tokens, t1 - t_cache);
    const double ceiling_after = sgemm_gflops(tokens, dim, dim, 5);
    const double ceiling = std::max(ceiling_before, ceiling_after);
    std::printf("prefill %d tokens in %.1f s (%.1f tok/s, %.1f GFLOP/s), logits finite: %s\n",
                tokens, t2 - t1, tokens / (t2 - t1), gf, finite ? "yes" : "NO");
    std::printf("sgemm %dx%dx%d: %.1f GFLOP/s (before %.1f, after %.1f): prefill at %.1f%%\n",
                tokens, dim, dim, ceiling, ceiling_before, ceiling_after, 100.0 * gf / ceiling);
    std::printf("peak RSS %.2f GiB\n", peak_rss_bytes() / 1073741824.0);
    return finite ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_big_prefill: %s\n", e.what());
    return 1;
  }
}
