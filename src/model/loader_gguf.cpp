// GGUF models (llama.cpp's conversions) onto the same Model as the Hugging Face loader:
// metadata keys {arch}.* become the ModelConfig, tensors blk.N.* the LayerWeights, which
// stay in the map in their stored (quantized) type. Architectures: llama (also Mistral
// conversions; Llama 3.1's rope_freqs.weight), qwen2, qwen3, gemma2, gemma3 (text), phi3
// (longrope's rope_factors_long/short). The meaning of each key and tensor is llama.cpp's,
// which is what a GGUF user runs:
// - llama: the converter permutes the rows of W_Q and W_K for llama.cpp's adjacent-pair
//   RoPE; they are read back in Hugging Face's order (Tensor::row_order), so the model runs
//   rotate-half RoPE and its keys before and after RoPE equal the Hugging Face model's.
// - gemma2/gemma3: every *norm.weight is stored as 1 + w (so norm_offset is 0 here); the
//   query scale is not stored: llama.cpp uses 1/sqrt(head_dim), or 1/sqrt(dim/n_heads) for
//   the 27B shapes (46 and 62 layers), which is query_pre_attn_scalar of the released
//   checkpoints; gemma3's sliding layers (5 of every 6) use RoPE base 10000 unscaled.
#include <cmath>
#include <set>
#include <utility>

#include "kvscope/io/error.hpp"
#include "kvscope/io/json_util.hpp"
#include "kvscope/model/gguf.hpp"
#include "kvscope/model/model.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Meta {
  const GgufFile& g;
  std::string arch;  // general.architecture: the prefix of the family's keys
  Family family;     // its row (names)
  Family base;       // the code path: a registered family takes its base's
  std::string src;

  bool has(const std::string& k) const { return g.metadata.contains(arch + "." + k); }
  const json& at(const std::string& k) const { return g.metadata.at(arch + "." + k); }
  // An integer in [lo, 2^24] (sizes and counts: lo 1, so a 0 is refused by its key).
  int64_t integer(const std::string& k, int64_t lo = 0) const {
    KV_CHECK(has(k), "{}: metadata '{}.{}' is missing", src, arch, k);
    const json& v = at(k);
    const std::optional<int64_t> i = json_integer(v, lo, int64_t(1) << 24);
    KV_CHECK(i.has_value(),
             "{}: metadata '{}.{}' must be an integer in [{}, 16777216], got {} "
             "({})",
             src, arch, k, lo, json_brief(v), type_of(k));
    return *i;
  }
  int64_t integer_or(const std::string& k, int64_t d, int64_t lo = 0) const {
    return has(k) ? integer(k, lo) : d;
  }
  std::string type_of(const std::string& k) const {
    auto it = g.metadata_type.find(arch + "." + k);
    return it == g.metadata_type.end() ? "?" : it->second;
  }
  // A finite number that stays finite as a float, in [lo, hi].
  double number_or(const std::string& k, double d, double lo = -3.4e38, double hi = 3.4e38) const {
    if (!has(k)) return d;
    const std::optional<double> v = json_finite(at(k));
    KV_CHECK(v && *v >= lo && *v <= hi && std::isfinite(float(*v)),
             "{}: metadata '{}.{}' must be a finite number in [{}, {}], got {} ({})", src, arch, k,
             lo, hi, json_brief(at(k)), type_of(k));
    return *v;
  }
};

// Every {arch}.* key is computed with or refused by name; general.*, tokenizer.* and the
// quantizer's notes (quantize.*) cannot change the forward pass.
void audit_keys(const Meta& m) {
  std::set<std::string> known = {"context_length",
                                 "embedding_length",
                                 "block_count",
                                 "feed_forward_length",
                                 "attention.head_count",
                                 "attention.head_count_kv",
                                 "attention.layer_norm_rms_epsilon",
                                 "rope.freq_base",
                                 "rope.dimension_count",
                                 "attention.key_length",
                                 "attention.value_length",
                                 "vocab_size",
                                 "rope.scaling.type",
                                 "rope.scaling.factor",
                                 "rope.scaling.original_context_length",
                                 "rope.scaling.finetuned"};
  switch (m.base) {
    case Family::kPhi3:
      known.insert({"attention.sliding_window", "rope.scaling.attn_factor"});
      break;
    case Family::kGemma2:
      known.insert(
          {"attention.sliding_window", "attn_logit_softcapping", "final_logit_softcapping"});
      break;
    case Family::kGemma3:
      known.insert("attention.sliding_window");
      break;
    case Family::kLlama:
    case Family::kMistral:
    case Family::kQwen2:
    case Family::kQwen3:
      break;
  }
  for (auto it = m.g.metadata.begin(); it != m.g.metadata.end(); ++it) {
    const std::string& k = it.key();
    if (k.rfind("general.", 0) == 0 || k.rfind("tokenizer.", 0) == 0 ||
        k.rfind("quantize.", 0) == 0 || k.rfind("split.", 0) == 0)
      continue;
    if (k.rfind(m.arch + ".", 0) == 0 && known.count(k.substr(m.arch.size() + 1))) continue;
    throw Error(
        fmt::format("{}: metadata '{}' = {} is not supported for architecture '{}' "
                    "(kvscope does not compute with it); the model is refused rather "
                    "than computed wrongly",
                    m.src, k, json_brief(it.value()), m.arch));
  }
}

// The converter's permutation of W_Q / W_K rows, per head of hd rows: stored row 2 i + s
// of a head is Hugging Face row s hd/2 + i. Returns, for each Hugging Face row, the stored
// row to read. Called only after check_shapes(): rows is heads x hd, hd even and positive.
std::shared_ptr<const std::vector<int32_t>> unpermute(const Tensor& t, int hd,
                                                      const std::string& src) {
  const int64_t rows = t.rows;
  KV_CHECK(hd > 0 && hd % 2 == 0 && rows % hd == 0 && rows <= INT32_MAX,
           "{}: tensor '{}' has {} rows, not whole heads of an even head size {}", src, t.name,
           rows, hd);
  auto order = std::make_shared<std::vector<int32_t>>(static_cast<size_t>(rows));
  for (int64_t h0 = 0; h0 < rows; h0 += hd)
    for (int s = 0; s < 2; ++s)
      for (int i = 0; i < hd / 2; ++i)
        (*order)[size_t(h0 + s * (hd / 2) + i)] = int32_t(h0 + 2 * i + s);
  return order;
}

// Gemma 2 / Gemma 3 as llama.cpp runs them (see the top of the file).
void gemma_config(const Meta& m, ModelConfig& c) {
  const bool g2 = m.base == Family::kGemma2;
  c.mlp_act = MlpActivation::kGeluTanh;
  c.norm_offset = 0.0f;  // the converter stored 1 + w
  c.embed_scale = float(std::sqrt(double(c.dim)));
  c.sandwich_norms = true;
  const bool is_27b = c.n_layers == (g2 ? 46 : 62);
  c.attn_scale = float(1.0 / std::sqrt(double(is_27b ? c.dim / c.n_heads : c.head_dim)));
  if (g2) {
    // llama.cpp's defaults when a (2024) file lacks the keys: Gemma 2's window and caps.
    c.sliding_window = int(m.integer_or("attention.sliding_window", 4096));
    c.attn_softcap = float(m.number_or("attn_logit_softcapping", 50.0, 1e-30));
    c.final_softcap = float(m.number_or("final_logit_softcapping", 30.0, 1e-30));
  } else {
    c.sliding_window = int(m.integer("attention.sliding_window"));
    c.rope_local_theta = 10000.0f;
  }
  const int pattern = g2 ? 2 : 6;  // a layer is global when l % pattern == pattern - 1
  c.sliding_layers.assign(size_t(c.n_layers), 0);
  for (int l = 0; l < c.n_layers; ++l) c.sliding_layers[size_t(l)] = l % pattern < pattern - 1;
}

// Per-frequency RoPE factors stored as tensors: llama's rope_freqs.weight (the converter's
// Llama 3.1 rope_scaling, each inverse frequency divided by its factor) and phi3's
// rope_factors_short/long.weight (longrope; chosen per forward call as transformers does,
// where llama.cpp chooses by the context size it was started with). [rot_dim/2] each.
template <class Get>
void rope_factor_tensors(const Meta& m, Get&& get, ModelConfig& c) {
  const size_t half = size_t(c.rot_dim() / 2);
  auto factors = [&](const std::string& name) {
    const Tensor t = get(name);
    KV_CHECK(t.numel() == int64_t(half),
             "{}: tensor '{}' holds {} values, expected rot_dim/2 "
             "= {}",
             m.src, name, t.numel(), half);
    const std::vector<float> f = t.to_f32();
    return std::vector<double>(f.begin(), f.end());
  };
  RopeScaling& rs = c.rope_scaling;
  if (m.base == Family::kLlama && m.g.find("rope_freqs.weight")) {
    KV_CHECK(rs.kind == RopeScalingKind::kNone,
             "{}: rope_freqs.weight together with "
             "llama.rope.scaling.type '{}' (two scalings at once) is not supported",
             m.src, rope_scaling_name(rs.kind));
    rs.kind = RopeScalingKind::kFreqFactors;
    rs.freq_factors = factors("rope_freqs.weight");
  }
  const bool has_long = m.g.find("rope_factors_long.weight") != nullptr;
  if (m.base == Family::kPhi3 && (has_long || m.g.find("rope_factors_short.weight"))) {
    KV_CHECK(rs.kind == RopeScalingKind::kNone,
             "{}: rope factor tensors together with "
             "phi3.rope.scaling.type '{}' are not supported",
             m.src, rope_scaling_name(rs.kind));
    rs.kind = RopeScalingKind::kLongrope;
    rs.short_factor = factors("rope_factors_short.weight");
    rs.long_factor = factors("rope_factors_long.weight");
    rs.original_max_position = int(m.integer("rope.scaling.original_context_length"));
    KV_CHECK(rs.original_max_position > 0,
             "{}: phi3.rope.scaling.original_context_length "
             "must be positive",
             m.src);
    rs.factor = double(c.max_seq_len) / rs.original_max_position;
    rs.attention_factor = m.number_or(  // the converter's default when absent
        "rope.scaling.attn_factor",
        rs.factor <= 1.0
            ? 1.0
            : std::sqrt(1.0 + std::log(rs.factor) / std::log(double(rs.original_max_position))),
        1e-30);
  }
  KV_CHECK(!m.has("rope.scaling.attn_factor") || rs.kind == RopeScalingKind::kLongrope,
           "{}: {}.rope.scaling.attn_factor without rope_factors_long/short.weight is not "
           "supported",
           m.src, m.arch);
}

// general.architecture and the family it names.
std::pair<std::string, Family> gguf_family(const GgufFile& g, const std::string& src) {
  KV_CHECK(g.metadata.contains("general.architecture"),
           "{}: metadata 'general.architecture' (a string) is missing", src);
  KV_CHECK(g.metadata["general.architecture"].is_string(),
           "{}: metadata 'general.architecture' must be a string, got {} ({})", src,
           json_brief(g.metadata["general.architecture"]),
           g.metadata_type.at("general.architecture"));
  const std::string arch = g.metadata["general.architecture"].get<std::string>();
  const std::optional<Family> family = family_from_gguf(arch);
  KV_CHECK(family.has_value(), "{}: GGUF architecture '{}' is not supported yet (supported: {})",
           src, arch, gguf_archs());
  return {arch, *family};
}

// Head sizes and rotary width: key_length or dim / heads; partial rotary only for Phi-3.
void head_config(const Meta& meta, ModelConfig& c) {
  const std::string& src = meta.src;
  KV_CHECK(meta.has("attention.key_length") || c.dim >= c.n_heads,
           "{}: {}.embedding_length {} is smaller than attention.head_count {}, so the head "
           "size embedding_length / head_count is 0",
           src, meta.arch, c.dim, c.n_heads);
  c.head_dim = int(meta.integer_or("attention.key_length", c.dim / c.n_heads, 1));
  KV_CHECK(meta.integer_or("attention.value_length", c.head_dim) == c.head_dim,
           "{}: {}.attention.value_length {} differs from key_length {} (not supported)", src,
           meta.arch, meta.integer("attention.value_length"), c.head_dim);
  const int64_t rot = meta.integer_or("rope.dimension_count", c.head_dim);
  if (meta.base == Family::kPhi3) {  // partial rotary: the first rot entries of each head
    KV_CHECK(rot > 0 && rot <= c.head_dim && rot % 2 == 0,
             "{}: phi3.rope.dimension_count {} "
             "must be even and within the head size {}",
             src, rot, c.head_dim);
    c.rotary_dim = rot == c.head_dim ? 0 : int(rot);
    c.sliding_window = int(meta.integer_or("attention.sliding_window", 0));
  } else {
    KV_CHECK(rot == c.head_dim,
             "{}: {}.rope.dimension_count {} differs from the head size {}: partial rotary is not "
             "supported for this architecture",
             src, meta.arch, rot, c.head_dim);
  }
}

// {arch}.rope.scaling.type: none or linear (the rest of the scalings come as tensors).
void rope_scaling_config(const Meta& meta, ModelConfig& c) {
  if (!meta.has("rope.scaling.type")) return;
  const std::string t = meta.at("rope.scaling.type").is_string()
                            ? meta.at("rope.scaling.type").get<std::string>()
                            : meta.at("rope.scaling.type").dump();
  if (t == "linear") {
    c.rope_scaling.kind = RopeScalingKind::kLinear;
    c.rope_scaling.factor = meta.number_or("rope.scaling.factor", 1.0, 1.0, 1e6);
  } else {
    KV_CHECK(t == "none", "{}: {}.rope.scaling.type '{}' is not supported (none, linear)", meta.src,
             meta.arch, t);
  }
}

// BOS / EOS ids from tokenizer.ggml.*, and which ids the file stated.
void special_ids(const GgufFile& g, const std::string& src, ModelConfig& c) {
  auto meta_id = [&](const char* k, int32_t d) {
    if (!g.metadata.contains(k)) return d;
    const json& v = g.metadata.at(k);
    const std::optional<int64_t> id = json_integer(v, 0, INT32_MAX);
    KV_CHECK(id.has_value(),
             "{}: metadata '{}' must be a token id (an integer >= 0), got {} "
             "({})",
             src, k, json_brief(v), g.metadata_type.at(k));
    return int32_t(*id);
  };
  c.bos_id = meta_id("tokenizer.ggml.bos_token_id", 1);
  c.eos_id = meta_id("tokenizer.ggml.eos_token_id", 2);
  for (const char* k : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"})
    if (g.metadata.contains(k)) c.stated_special_ids.emplace_back(k, meta_id(k, 0));
}

// The ModelConfig from the metadata (vocab_size and tied_embeddings come with the tensors).
ModelConfig gguf_config(const Meta& meta) {
  ModelConfig c;
  c.family = meta.family;
  c.dim = int(meta.integer("embedding_length", 1));
  c.hidden_dim = int(meta.integer("feed_forward_length", 1));
  c.n_layers = int(meta.integer("block_count", 1));
  c.n_heads = int(meta.integer("attention.head_count", 1));
  c.n_kv_heads = int(meta.integer_or("attention.head_count_kv", c.n_heads, 1));
  head_config(meta, c);
  c.max_seq_len = int(meta.integer_or("context_length", 2048, 1));
  c.norm_eps = float(meta.number_or("attention.layer_norm_rms_epsilon", 1e-5, 1e-30, 1.0));
  c.rope_theta = float(meta.number_or("rope.freq_base", 10000.0, 1e-30));
  c.rope_layout = RopeLayout::kRotateHalf;  // after un-permuting llama's Q/K rows
  rope_scaling_config(meta, c);
  const FamilyTraits& ft = traits(meta.base);
  c.qkv_bias = ft.fixed_qkv_bias;
  c.qk_norm = ft.qk_norm;
  if (ft.gemma) gemma_config(meta, c);
  special_ids(meta.g, meta.src, c);
  return c;
}

// blk.N.* into the layers, by the slot table (Phi-3's fused tensors split into their slots).
template <class Get>
void gguf_layers(const GgufFile& g, const ModelConfig& c, const std::string& src, Get&& get,
                 Weights& w) {
  // A lying block_count (up to 2^24) must not size the layer table (found by fuzz_gguf).
  const std::string last = fmt::format("blk.{}.attn_norm.weight", c.n_layers - 1);
  KV_CHECK(g.find(last) != nullptr, "{}: {}.block_count is {} but tensor '{}' is missing", src,
           traits(c.family).gguf_arch, c.n_layers, last);
  w.layers.resize(size_t(c.n_layers));
  const bool fused = traits(c.family).fused;
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    LayerWeights& lw = w.layers[size_t(l)];
    // Phi-3: Q, K and V fused as in the Hugging Face checkpoint when attn_qkv is there
    // (rows [Q; K; V], rotate-half RoPE, no permutation), else separate; ffn_up holds
    // [gate; up].
    const bool qkv_fused = fused && g.find(p + "attn_qkv.weight");
    if (qkv_fused) split_fused_qkv(get(p + "attn_qkv.weight"), c, src, lw);
    if (fused) split_fused_gate_up(get(p + "ffn_up.weight"), c, src, lw);
    for (const SlotRow& r : layer_slots()) {
      if (!r.present(c)) continue;
      const bool qkv = r.slot == Slot::kWq || r.slot == Slot::kWk || r.slot == Slot::kWv;
      if (fused_slot(r.slot, c) && (qkv_fused || !qkv)) continue;  // split above
      KV_CHECK(r.gguf != nullptr, "{}: a {} model's '{}' has no GGUF tensor", src,
               family_name(c.family), r.name);
      lw.*r.member = get(p + r.gguf);  // Gemma: ffn_norm is its pre-feedforward norm
    }
  }
}

}  // namespace

Model load_gguf(const fs::path& path) {
  GgufFile g = open_gguf(path);
  const std::string src = path.string();
  const auto [arch, family] = gguf_family(g, src);
  const Meta meta{g, arch, family, base_of(family), src};
  audit_keys(meta);

  Model m;
  m.name = path.stem().string();
  m.format = "gguf";
  m.source = path;
  m.files = {path};
  ModelConfig& c = m.config;
  c = gguf_config(meta);
  std::set<std::string> used;
  auto get = [&](const std::string& name) {
    const GgufTensor* t = g.find(name);
    KV_CHECK(t != nullptr, "{}: tensor '{}' is missing", src, name);
    used.insert(name);
    return t->tensor;
  };
  Weights& w = m.weights;
  w.tok_embedding = get("token_embd.weight");
  c.vocab_size = int(meta.integer_or("vocab_size", w.tok_embedding.rows, 1));
  c.tied_embeddings = g.find("output.weight") == nullptr;  // the converter drops a tied head
  w.classifier = c.tied_embeddings ? w.tok_embedding : get("output.weight");
  w.final_norm = get("output_norm.weight");
  // Every derived size is checked before any tensor's rows are used.
  validate(c, src);
  gguf_layers(g, c, src, get, w);
  rope_factor_tensors(meta, get, c);
  for (const GgufTensor& t : g.tensors)
    KV_CHECK(used.count(t.name),
             "{}: tensor '{}' is not used by architecture '{}' (a layer beyond block_count {} "
             "or a weight kvscope does not compute with)",
             src, t.name, arch, c.n_layers);
  validate(c, src);
  check_shapes(m);
  if (meta.base == Family::kLlama)  // rows are now known to be whole heads
    for (LayerWeights& lw : w.layers) {
      lw.wq.row_order = unpermute(lw.wq, c.head_dim, src);
      lw.wk.row_order = unpermute(lw.wk, c.head_dim, src);
    }
  return m;
}

}  // namespace kvscope
