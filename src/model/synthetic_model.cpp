#include "kvscope/model/synthetic_model.hpp"

#include "kvscope/model/hf_config.hpp"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kvscope/io/error.hpp"
#include "kvscope/model/safetensors.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Planned {
  SafetensorsSpec spec;
  float scale;   // uniform half-width
  float offset;  // added to every value (1 for norm weights)
};

std::vector<Planned> plan(const ModelConfig& c, DType dt) {
  std::vector<Planned> p;
  auto mat = [&](const std::string& n, int64_t rows, int64_t cols) {
    p.push_back({{n, dt, {rows, cols}}, float(1.0 / std::sqrt(double(cols))), 0.0f});
  };
  auto bias = [&](const std::string& n, int64_t len) { p.push_back({{n, dt, {len}}, 0.5f, 0.0f}); };
  // Gemma stores each norm weight as its deviation from 1 (the model multiplies by 1 + w).
  const float norm_offset = c.norm_offset == 1.0f ? 0.0f : 1.0f;
  auto vec = [&](const std::string& n, int64_t len) {
    p.push_back({{n, dt, {len}}, 0.05f, norm_offset});
  };
  p.push_back({{"model.embed_tokens.weight", dt, {c.vocab_size, c.dim}}, 1.0f, 0.0f});
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    vec(pre + "input_layernorm.weight", c.dim);
    if (traits(c.family).fused) {  // Phi-3: rows [Q; K; V] and [gate; up]
      mat(pre + "self_attn.qkv_proj.weight", c.q_dim() + 2 * c.kv_dim(), c.dim);
      mat(pre + "mlp.gate_up_proj.weight", 2 * c.hidden_dim, c.dim);
    } else {
      mat(pre + "self_attn.q_proj.weight", c.q_dim(), c.dim);
      mat(pre + "self_attn.k_proj.weight", c.kv_dim(), c.dim);
      mat(pre + "self_attn.v_proj.weight", c.kv_dim(), c.dim);
      mat(pre + "mlp.gate_proj.weight", c.hidden_dim, c.dim);
      mat(pre + "mlp.up_proj.weight", c.hidden_dim, c.dim);
    }
    mat(pre + "self_attn.o_proj.weight", c.dim, c.q_dim());
    vec(pre + "post_attention_layernorm.weight", c.dim);
    if (c.sandwich_norms) {
      vec(pre + "pre_feedforward_layernorm.weight", c.dim);
      vec(pre + "post_feedforward_layernorm.weight", c.dim);
    }
    mat(pre + "mlp.down_proj.weight", c.dim, c.hidden_dim);
    if (c.qkv_bias) {
      bias(pre + "self_attn.q_proj.bias", c.q_dim());
      bias(pre + "self_attn.k_proj.bias", c.kv_dim());
      bias(pre + "self_attn.v_proj.bias", c.kv_dim());
    }
    if (c.o_bias) bias(pre + "self_attn.o_proj.bias", c.dim);
    if (c.qk_norm) {
      vec(pre + "self_attn.q_norm.weight", c.head_dim);
      vec(pre + "self_attn.k_norm.weight", c.head_dim);
    }
    if (c.mlp_bias) {
      bias(pre + "mlp.gate_proj.bias", c.hidden_dim);
      bias(pre + "mlp.up_proj.bias", c.hidden_dim);
      bias(pre + "mlp.down_proj.bias", c.dim);
    }
  }
  vec("model.norm.weight", c.dim);
  if (!c.tied_embeddings) mat("lm_head.weight", c.vocab_size, c.dim);
  return p;
}

void write_tensor_data(SafetensorsWriter& w, const Planned& t, uint64_t seed) {
  int64_t numel = 1;
  for (int64_t d : t.spec.shape) numel *= d;
  const size_t esz = dtype_size(t.spec.dtype);
  const int64_t chunk = 1 << 20;
  std::vector<std::byte> buf(size_t(chunk) * esz);
  for (int64_t i0 = 0; i0 < numel; i0 += chunk) {
    const int64_t n = std::min(chunk, numel - i0);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t r = splitmix64(seed ^ uint64_t(i0 + i) * 0x2545f4914f6cdd1dull);
      const float u = float(double(r >> 11) * 0x1p-53 * 2.0 - 1.0);  // [-1, 1)
      const float val = t.offset + t.scale * u;
      std::byte* dst = buf.data() + size_t(i) * esz;
      if (t.spec.dtype == DType::F32) {
        std::memcpy(dst, &val, 4);
      } else if (t.spec.dtype == DType::BF16) {
        const uint16_t h = f32_to_bf16(val);
        std::memcpy(dst, &h, 2);
      } else {
        const uint16_t h = f32_to_f16(val);
        std::memcpy(dst, &h, 2);
      }
    }
    w.write(buf.data(), size_t(n) * esz);
  }
}

}  // namespace

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void write_synthetic_hf_model(const fs::path& dir, const SyntheticSpec& spec) {
  const ModelConfig& c = spec.config;
  validate(c, "synthetic model spec");
  KV_CHECK(spec.n_shards >= 1, "synthetic model: n_shards must be >= 1, got {}", spec.n_shards);
  fs::create_directories(dir);
  const json cfg = hf_config_json(c, spec.dtype, spec.write_head_dim);
  {
    std::ofstream out(dir / "config.json");
    out << cfg.dump(2) << "\n";
    KV_CHECK(out.good(), "{}: write failed", (dir / "config.json").string());
  }

  const std::vector<Planned> all = plan(c, spec.dtype);
  // Split into shards of roughly equal byte counts, keeping tensor order.
  uint64_t total = 0;
  for (const auto& t : all) {
    int64_t n = 1;
    for (int64_t d : t.spec.shape) n *= d;
    total += uint64_t(n) * dtype_size(t.spec.dtype);
  }
  const uint64_t per_shard = (total + uint64_t(spec.n_shards) - 1) / uint64_t(spec.n_shards);
  std::vector<std::vector<size_t>> shards(1);
  uint64_t acc = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : all[i].spec.shape) n *= d;
    const uint64_t nb = uint64_t(n) * dtype_size(all[i].spec.dtype);
    if (acc > 0 && acc + nb > per_shard && int(shards.size()) < spec.n_shards) {
      shards.emplace_back();
      acc = 0;
    }
    shards.back().push_back(i);
    acc += nb;
  }
  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string fname = spec.n_shards == 1 ? "model.safetensors"
                                                 : fmt::format("model-{:05d}-of-{:05d}.safetensors",
                                                               s + 1, shards.size());
    std::vector<SafetensorsSpec> specs;
    for (size_t i : shards[s]) {
      specs.push_back(all[i].spec);
      weight_map[all[i].spec.name] = fname;
    }
    SafetensorsWriter w(dir / fname, specs, {{"format", "pt"}});
    for (size_t i : shards[s]) write_tensor_data(w, all[i], spec.seed * 1000003ull + i);
    w.finish();
  }
  if (spec.n_shards > 1) {
    std::ofstream out(dir / "model.safetensors.index.json");
    out << json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) << "\n";
    KV_CHECK(out.good(), "{}: write failed", (dir / "model.safetensors.index.json").string());
  }
}

}  // namespace kvscope
