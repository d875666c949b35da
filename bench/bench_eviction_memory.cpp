// Memory of scoring an eviction decision on a 32k-token prefill of one 8B-shaped layer
// (Llama-3-8B: 32 query heads, 8 KV heads, head_dim 128): the policies score from the
// observation window's queries, running column sums or the current query, never an S x S
// matrix, so the memory they add over the cache grows as S x heads. Each context length
// runs in its own process (peak RSS only grows); per method the peak RSS added over the
// cache and inputs, against what the frame records per query head (S doubles each) and
// against one head's S x S float matrix.
//
//   bench_eviction_memory [max_tokens=32768]
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "bench_util.hpp"
#include "kvscope/kv/eviction.hpp"

using namespace kvscope;

namespace {

void one_length(int S) {
  ModelConfig c;
  c.n_layers = 1, c.n_heads = 32, c.n_kv_heads = 8, c.head_dim = 128, c.dim = 4096;
  const int hd = c.head_dim, KV = c.n_kv_heads * hd, W = 32;
  KVCache cache(c, S);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> k(size_t(1024) * KV), v(size_t(1024) * KV);
  for (int t = 0; t < S; t += 1024) {
    for (float& x : k) x = nd(rng);
    for (float& x : v) x = nd(rng);
    cache.append(0, k.data(), v.data(), KV, 1024);
    cache.commit(1024);
  }
  std::vector<float> wq(size_t(c.n_heads) * W * hd);
  for (float& x : wq) x = nd(rng);
  // What CompressedRun records for H2O: S doubles per query head.
  std::vector<std::vector<double>> mass_q(size_t(c.n_heads), std::vector<double>(size_t(S)));
  for (auto& m : mass_q)
    for (double& x : m) x = std::abs(nd(rng));
  const long base = bench::peak_rss_bytes();
  const double cache_mb = double(cache.bytes_in_use()) / 1e6;
  std::printf(
      "S=%d: K/V cache %.0f MB, recorded mass %.1f MB (S x query heads doubles); one "
      "head's S x S float matrix would be %.0f MB\n",
      S, cache_mb, double(S) * c.n_heads * 8 / 1e6, double(S) * S * 4 / 1e6);
  for (const char* name : {"streaming", "knorm", "h2o", "tova", "snapkv", "adakv"}) {
    YamlMap keys(parse_yaml_string("{}", "bench"), "bench");
    const auto p = eviction_method(name, "bench").make(keys, PolicyContext{});
    const double t0 = bench::now_seconds();
    std::vector<std::vector<double>> mass_kv;  // the frame's per-KV-head sums
    if (p->needs().attention_mass) {
      mass_kv.assign(size_t(c.n_kv_heads), std::vector<double>(size_t(S), 0.0));
      for (int h = 0; h < c.n_heads; ++h)
        for (int j = 0; j < S; ++j)
          mass_kv[size_t(h / 4)][size_t(j)] += mass_q[size_t(h)][size_t(j)];
    }
    LayerView view;
    view.config = &c, view.cache = &cache, view.layer = 0;
    view.window_q = wq.data(), view.window_stride = W;
    view.n_window = p->needs().window_queries;
    view.mass = p->needs().attention_mass ? &mass_kv : nullptr;
    LayerBudget b;
    b.per_head.assign(size_t(c.n_kv_heads), S / 8);
    b.pooled = p->pooled();
    b.floor = int(p->alpha * (S / 8));
    const std::vector<HeadKeep> kept = p->select(view, b);
    const double secs = bench::now_seconds() - t0;
    std::printf("  %-10s kept %zu of %d per head in %6.2f s; peak RSS over cache+inputs %7.1f MB\n",
                name, kept[0].slots.size(), S, secs, double(bench::peak_rss_bytes() - base) / 1e6);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const int max_tokens = argc > 1 ? std::atoi(argv[1]) : 32768;
  for (int S = 4096; S <= max_tokens; S *= 2) {
    const pid_t pid = fork();
    if (pid == 0) {
      one_length(S);
      std::_Exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
  }
  return 0;
}
