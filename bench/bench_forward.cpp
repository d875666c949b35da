// Prefill and decode throughput of the forward pass, as tokens/s and as GFLOP/s next to
// the machine's own sgemm rate measured in the same run.
//
//   build/bench/bench_forward [threads] [MODEL]   (MODEL: measure only names containing it)
//
// Models: the three shipped ones, and a synthetic LLaMA-shaped model with random
// weights big enough to be GEMM-bound (dim 2048, 16 heads, 4 KV heads, 4 layers,
// hidden 5632, vocab 32000, f32 in memory) prefilling 1024 tokens.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/threads.hpp"

using namespace kvscope;
using namespace kvscope::bench;

namespace {

struct Row {
  double prefill_tps, prefill_gflops, decode_tps, decode_gflops;
};

Row measure(const Model& m, int T, int decode_tokens) {
  std::vector<int32_t> toks(static_cast<size_t>(T));
  for (int i = 0; i < T; ++i) toks[size_t(i)] = int32_t(3 + (i * 7919) % (m.config.vocab_size - 3));
  toks[0] = m.config.bos_id;
  RunState st(m.config, T + decode_tokens);
  forward(m, st, toks);  // warm-up: first touch of buffers and thread pools
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    st.reset();
    const double t0 = now_seconds();
    forward(m, st, toks);
    best = std::min(best, now_seconds() - t0);
  }
  Row row{};
  row.prefill_tps = T / best;
  row.prefill_gflops = prefill_flops(m.config, T, T) / best / 1e9;
  // Decode after the prefill: one token at a time, last-token logits only.
  double flops = 0.0;
  const double t0 = now_seconds();
  for (int i = 0; i < decode_tokens; ++i) {
    flops += decode_flops(m.config, st.cache.length());
    const int32_t t = toks[size_t(i % T)];
    forward(m, st, std::span<const int32_t>(&t, 1), {LogitsMode::kLast});
  }
  const double dt = now_seconds() - t0;
  row.decode_tps = decode_tokens / dt;
  row.decode_gflops = flops / dt / 1e9;
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = set_threads(argc > 1 ? std::atoi(argv[1]) : 0);
  std::printf("threads: %d\nBLAS: %s\n", threads, blas_info().c_str());
  // The ceiling: sgemm of the forward pass's call shape, best of 10 runs, measured before
  // and after the models; the better one counts (a busy moment only lowers one).
  const double ceiling_before = sgemm_gflops(1024, 2048, 2048);

  struct Named {
    std::string name;
    int T;
    Row r;
  };
  std::vector<Named> rows;
  const std::string only = argc > 2 ? argv[2] : "";
  auto wanted = [&](const char* name) { return std::string(name).find(only) != std::string::npos; };
  auto run = [&](const char* name, const Model& m, int T, int dec) {
    rows.push_back({name, T, measure(m, T, dec)});
    std::fprintf(stderr, "measured %s\n", name);
  };
  const std::string data = KVSCOPE_SOURCE_DIR "/data/models/";
  if (wanted("stories260K"))
    run("stories260K", load_model(data + "stories260K/stories260K.bin"), 512, 256);
  if (wanted("tinystories656K"))
    run("tinystories656K", load_model(data + "tinystories656K"), 512, 256);
  if (wanted("babyllama105"))
    run("babyllama105", load_model(data + "babyllama105/model5000.bin"), 256, 128);

  SyntheticSpec s;
  ModelConfig& c = s.config;
  c.dim = 2048;
  c.hidden_dim = 5632;
  c.n_layers = 4;
  c.n_heads = 16;
  c.n_kv_heads = 4;
  c.head_dim = 128;
  c.vocab_size = 32000;
  c.max_seq_len = 2048;
  const auto dir = std::filesystem::temp_directory_path() / "kvscope_bench_synthetic_2048";
  if (wanted("synthetic d2048 L4")) {
    if (!std::filesystem::exists(dir / "config.json")) write_synthetic_hf_model(dir, s);
    run("synthetic d2048 L4", load_model(dir), 1024, 32);
  }
  const double ceiling_after = sgemm_gflops(1024, 2048, 2048);
  const double ceiling = std::max(ceiling_before, ceiling_after);

  std::printf("sgemm ceiling (1024x2048x2048, A*B^T): %.1f GFLOP/s (before %.1f, after %.1f)\n\n",
              ceiling, ceiling_before, ceiling_after);
  std::printf("%-20s %6s | %11s %9s %7s | %10s %9s %7s\n", "model", "tokens", "prefill t/s",
              "GFLOP/s", "%sgemm", "decode t/s", "GFLOP/s", "%sgemm");
  for (const Named& n : rows)
    std::printf("%-20s %6d | %11.0f %9.2f %6.1f%% | %10.1f %9.2f %6.1f%%\n", n.name.c_str(), n.T,
                n.r.prefill_tps, n.r.prefill_gflops, 100.0 * n.r.prefill_gflops / ceiling,
                n.r.decode_tps, n.r.decode_gflops, 100.0 * n.r.decode_gflops / ceiling);
  return 0;
}
