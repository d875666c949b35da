// What the cache codecs cost. (1) ggml's reference quantizers for the KV cache types:
// quantize + dequantize of one 8B-shaped layer's keys for 4096 tokens (8 KV heads x 128),
// in GB/s of float32 input, against the machine's own copy rate in the same run (the
// ceiling of any pass that reads and writes the data once). (2) A decoding step of
// austen_induction (2 layers, 4 KV heads, head_dim 32) under each codec against the full
// cache: the codec's share of the step (llama.cpp's types encode each token as it is
// written; KIVI scans for groups that fall due; the low-rank cache projects each token).
//
//   bench_kv_codec [model_dir=data/models/austen_induction]
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "bench_util.hpp"
#include "kvscope/kv/compressed_run.hpp"
#include "kvscope/kv/kv_codec.hpp"
#include "kvscope/model/dtype.hpp"

using namespace kvscope;

namespace {

double copy_gbs(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  double best = 1e30;
  for (int r = 0; r < 10; ++r) {
    const double t0 = bench::now_seconds();
    std::memcpy(y.data(), x.data(), x.size() * 4);
    best = std::min(best, bench::now_seconds() - t0);
  }
  volatile float sink = y[y.size() / 2];
  (void)sink;
  return double(x.size()) * 4 / best / 1e9;
}

std::shared_ptr<const KVCodec> make(const std::string& method, const std::string& yaml,
                                    const CodecContext& ctx = {}, double share = 1.0) {
  YamlMap keys(parse_yaml_string(yaml, "bench"), "bench");
  return find_codec_method(method)->make(keys, ctx, share);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string model_dir = argc > 1 ? argv[1] : "data/models/austen_induction";
  // (1) Quantizers.
  const size_t n = size_t(4096) * 8 * 128;
  std::vector<float> x(n), y(n);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (float& e : x) e = nd(rng);
  const double ceiling = copy_gbs(x);
  std::printf("memcpy of %.0f MB: %.2f GB/s (the ceiling)\n", double(n) * 4 / 1e6, ceiling);
  std::printf("%-8s %12s %12s %10s\n", "type", "quant GB/s", "round GB/s", "/ memcpy");
  for (DType t : {DType::Q8_0, DType::Q5_1, DType::Q5_0, DType::Q4_1, DType::Q4_0, DType::IQ4_NL}) {
    std::vector<std::byte> b(row_bytes(t, int64_t(n)));
    double tq = 1e30, tr = 1e30;
    for (int r = 0; r < 3; ++r) {
      const double t0 = bench::now_seconds();
      quantize_blocks(t, x.data(), int64_t(n / 32), b.data());
      const double t1 = bench::now_seconds();
      dequantize_blocks(t, b.data(), int64_t(n / 32), y.data());
      const double t2 = bench::now_seconds();
      tq = std::min(tq, t1 - t0), tr = std::min(tr, t2 - t0);
    }
    const double gq = double(n) * 4 / tq / 1e9, gr = double(n) * 4 / tr / 1e9;
    std::printf("%-8s %12.2f %12.2f %9.3fx\n", std::string(dtype_name(t)).c_str(), gq, gr,
                gr / ceiling);
  }
  // (2) Decoding steps under each codec.
  const Model m = load_model(model_dir);
  const int prefill = 384, decode = 127;
  std::vector<int32_t> tok(size_t(prefill + decode));
  for (int32_t& t : tok) t = int32_t(rng() % 500) + 3;
  std::vector<int32_t> cal(8192);
  for (int32_t& t : cal) t = int32_t(rng() % 500) + 3;
  CalibrationOptions co;
  co.tokens = 4096, co.tensors = {"k_pre_rope", "k", "v"};
  CalibrationGrams g = collect_grams(m, m.config.bos_id, cal, co);
  struct Case {
    const char* name;
    std::shared_ptr<const KVCodec> codec;
  };
  const Case cases[] = {{"full", nullptr},
                        {"q8_0", make("q8_0", "{}")},
                        {"q4_0", make("q4_0", "{}")},
                        {"kivi", make("kivi", "{}")},
                        {"kvquant", make("kvquant", "{}")},
                        {"lowrank", make("lowrank", "{}", CodecContext{&m, &g}, 0.5)}};
  std::printf("\n%s: %d-token prefill, then %d decoded tokens\n%-8s %10s %10s\n", model_dir.c_str(),
              prefill, decode, "codec", "ms/token", "/ full");
  double full_ms = 0;
  for (const Case& c : cases) {
    double best = 1e30;
    for (int r = 0; r < 3; ++r) {
      CompressedRun run(m, prefill + decode, {}, 2,
                        c.codec && c.codec->on_store() ? c.codec : nullptr);
      run.prefill(std::span<const int32_t>(tok).subspan(0, size_t(prefill)));
      Variant v;
      v.name = c.name, v.codec = c.codec;
      run.compress(v, 1);
      const double t0 = bench::now_seconds();
      for (int i = 0; i < decode; ++i) run.step(tok[size_t(prefill + i)]);
      best = std::min(best, bench::now_seconds() - t0);
    }
    const double ms = best / decode * 1e3;
    if (!c.codec) full_ms = ms;
    std::printf("%-8s %10.3f %9.2fx\n", c.name, ms, ms / full_ms);
  }
}
