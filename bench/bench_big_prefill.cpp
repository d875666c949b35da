// Loads a (big) checkpoint and runs one prefill, reporting load time, prefill time and
// the process's peak RSS: the check that a 7B-shaped BF16 model runs within 24 GiB
// with stored weights widened to f32 a block at a time when used. The rate is also given as a share
// of the machine's sgemm rate on the prefill's own shape (tokens x dim x dim), measured in the same
// run between the load and the prefill and after the prefill (the better one counts).
// With --decode N it then decodes N tokens and gives their rate next to the machine's
// bandwidth limit measured in the same run: the bytes of the weights a token reads over the
// sequential read rate (read_bandwidth_gbs).
//   build/bench/bench_big_prefill MODEL_DIR [--tokens 512] [--threads 0] [--block-mib 32]
//                                 [--decode 0]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "bench_util.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/threads.hpp"

using namespace kvscope;
using namespace kvscope::bench;

int main(int argc, char** argv) {
  CLI::App app{"One prefill on a big checkpoint, with peak RSS"};
  std::string dir;
  int tokens = 512, threads = 0, decode = 0;
  double block_mib = double(ForwardOptions{}.widen_block_bytes) / (1 << 20);
  app.add_option("model", dir, "model directory or file")->required();
  app.add_option("--tokens", tokens, "prompt length");
  app.add_option("--threads", threads, "threads (0: all)");
  app.add_option("--block-mib", block_mib,
                 "MiB of float32 a stored matrix is widened into at a time, across the threads "
                 "(ForwardOptions::widen_block_bytes)");
  app.add_option("--decode", decode, "tokens to decode after the prefill, timed");
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
    RunState st(m.config, tokens + decode);
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
    if (decode > 0) {
      // The bytes a decoding step reads: every layer's weights as stored, and the
      // classifier (the embedding row is one row).
      double weight_bytes = double(m.weights.classifier.bytes());
      for (const LayerWeights& lw : m.weights.layers)
        for (const SlotRow& r : layer_slots()) weight_bytes += double((lw.*r.member).bytes());
      opt.logits = LogitsMode::kLast;
      const double t3 = now_seconds();
      for (int i = 0; i < decode; ++i) {
        const int32_t t = toks[size_t(i) % toks.size()];
        const auto lg = forward(m, st, std::span<const int32_t>(&t, 1), opt);
        for (float v : lg) finite = finite && std::isfinite(v);
      }
      const double tps = decode / (now_seconds() - t3);
      std::printf("peak RSS after decoding %.2f GiB (before the read-rate probe's buffer)\n",
                  peak_rss_bytes() / 1073741824.0);
      const double bw = read_bandwidth_gbs();
      const double limit = bw * 1e9 / weight_bytes;
      std::printf(
          "decode %d tokens: %.3f tok/s; weights %.2f GB per token, read rate %.1f GB/s: "
          "limit %.3f tok/s, decode at %.1f%% of it; logits finite: %s\n",
          decode, tps, weight_bytes / 1e9, bw, limit, 100.0 * tps / limit, finite ? "yes" : "NO");
    }
    if (decode == 0) std::printf("peak RSS %.2f GiB\n", peak_rss_bytes() / 1073741824.0);
    return finite ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_big_prefill: %s\n", e.what());
    return 1;
  }
}
