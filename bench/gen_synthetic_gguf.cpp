// Writes a random LLaMA-2-7B-shaped GGUF in the mix of llama.cpp's Q4_K_M (Q4_K matrices,
// Q6_K for attn_v, ffn_down and the output; F32 norms), streamed block by block, never
// committed:  build/bench/gen_synthetic_gguf OUT.gguf [--layers 32]
// Blocks hold random packed bits under small finite scales, so the weights are finite and
// O(1/sqrt(fan_in))-ish; what it measures is memory and time, not language.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "kvscope/model/dtype.hpp"
#include "kvscope/model/synthetic_model.hpp"

using namespace kvscope;

namespace {

struct Spec {
  std::string name;
  std::vector<uint64_t> dims;  // ne0 first
  uint32_t type;               // ggml type id: 0 F32, 12 Q4_K, 14 Q6_K
  uint64_t bytes() const {
    const uint64_t n = dims.size() == 1 ? dims[0] : dims[0] * dims[1];
    if (type == 0) return n * 4;
    return n / 256 * (type == 12 ? 144 : 210);
  }
};

template <class V>
void put(std::string& s, V v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(V));
}
void put_str(std::string& s, const std::string& v) {
  put(s, uint64_t(v.size()));
  s += v;
}

// One block of random bits whose half-precision scales are small and finite.
void fill_block(uint32_t type, uint64_t seed, uint8_t* b, float scale) {
  const size_t n = type == 12 ? 144 : 210;
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t r = splitmix64(seed + i);
    std::memcpy(b + i, &r, std::min<size_t>(8, n - i));
  }
  const uint16_t d = f32_to_f16(scale), dmin = f32_to_f16(scale * 0.5f);
  if (type == 12) {  // Q4_K: d, dmin at the front
    std::memcpy(b, &d, 2);
    std::memcpy(b + 2, &dmin, 2);
  } else {  // Q6_K: d at the end; int8 scales kept small
    std::memcpy(b + 208, &d, 2);
    for (int i = 0; i < 16; ++i) b[192 + i] = uint8_t(int8_t(int(b[192 + i] % 16) - 8));
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a random 7B-shaped Q4_K_M GGUF"};
  std::string out;
  int layers = 32;
  app.add_option("out", out, "output .gguf")->required();
  app.add_option("--layers", layers, "transformer blocks");
  CLI11_PARSE(app, argc, argv);
  const uint64_t D = 4096, H = 11008, V = 32000;
  std::vector<Spec> ts;
  ts.push_back({"token_embd.weight", {D, V}, 12});
  for (int l = 0; l < layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    ts.push_back({p + "attn_norm.weight", {D}, 0});
    ts.push_back({p + "attn_q.weight", {D, D}, 12});
    ts.push_back({p + "attn_k.weight", {D, D}, 12});
    ts.push_back({p + "attn_v.weight", {D, D}, 14});
    ts.push_back({p + "attn_output.weight", {D, D}, 12});
    ts.push_back({p + "ffn_norm.weight", {D}, 0});
    ts.push_back({p + "ffn_gate.weight", {D, H}, 12});
    ts.push_back({p + "ffn_up.weight", {D, H}, 12});
    ts.push_back({p + "ffn_down.weight", {H, D}, 14});
  }
  ts.push_back({"output_norm.weight", {D}, 0});
  ts.push_back({"output.weight", {D, V}, 14});

  std::string h;
  put(h, uint32_t(0x46554747));
  put(h, uint32_t(3));
  put(h, uint64_t(ts.size()));
  const std::vector<std::pair<std::string, uint32_t>> u32s = {
      {"llama.context_length", 4096},          {"llama.embedding_length", uint32_t(D)},
      {"llama.block_count", uint32_t(layers)}, {"llama.feed_forward_length", uint32_t(H)},
      {"llama.attention.head_count", 32},      {"llama.attention.head_count_kv", 32},
      {"llama.rope.dimension_count", 128},     {"general.file_type", 15}};
  put(h, uint64_t(u32s.size() + 3));
  put_str(h, "general.architecture");
  put(h, uint32_t(8));
  put_str(h, "llama");
  put_str(h, "general.name");
  put(h, uint32_t(8));
  put_str(h, "synthetic 7B Q4_K_M");
  for (const auto& [k, v] : u32s) {
    put_str(h, k);
    put(h, uint32_t(4));
    put(h, v);
  }
  put_str(h, "llama.attention.layer_norm_rms_epsilon");
  put(h, uint32_t(6));
  put(h, 1e-5f);
  uint64_t off = 0;
  for (const Spec& t : ts) {
    put_str(h, t.name);
    put(h, uint32_t(t.dims.size()));
    for (uint64_t d : t.dims) put(h, d);
    put(h, t.type);
    put(h, off);
    off = (off + t.bytes() + 31) / 32 * 32;
  }
  h.resize((h.size() + 31) / 32 * 32, '\0');
  std::ofstream f(out, std::ios::binary);
  f.write(h.data(), std::streamsize(h.size()));
  std::vector<uint8_t> buf;
  uint64_t seed = 1;
  for (const Spec& t : ts) {
    if (t.type == 0) {
      std::vector<float> ones(t.dims[0], 1.0f);
      f.write(reinterpret_cast<const char*>(ones.data()), std::streamsize(ones.size() * 4));
    } else {
      const size_t bb = t.type == 12 ? 144 : 210;
      const uint64_t blocks = t.bytes() / bb;
      // Scale so that a dot product over ne0 inputs stays O(1).
      const float scale = 0.25f / float(std::sqrt(double(t.dims[0])));
      const uint64_t chunk = 4096;
      buf.resize(chunk * bb);
      for (uint64_t b0 = 0; b0 < blocks; b0 += chunk) {
        const uint64_t n = std::min(chunk, blocks - b0);
        for (uint64_t i = 0; i < n; ++i)
          fill_block(t.type, (seed += 0x1000), buf.data() + i * bb, scale);
        f.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(n * bb));
      }
    }
    const uint64_t pad = (32 - t.bytes() % 32) % 32;
    f.write("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            std::streamsize(pad));
  }
  if (!f.good()) {
    std::fprintf(stderr, "gen_synthetic_gguf: write to %s failed\n", out.c_str());
    return 1;
  }
  return 0;
}
