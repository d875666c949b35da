// Hugging Face LLaMA checkpoints: config.json + model.safetensors, or shards listed by
// model.safetensors.index.json. Tensors stay memory-mapped in their stored dtype.
// HF stores Q/K weights permuted for the rotate-half RoPE layout, so no un-permuting is
// done: the model simply runs with RopeLayout::kRotateHalf.
#include <fmt/ranges.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "kvscope/io/error.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/safetensors.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json(const fs::path& p) {
  std::ifstream in(p);
  KV_CHECK(in.good(), "{}: cannot open", p.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", p.string(), e.what()));
  }
}

template <class T>
T field(const json& j, const char* key, const fs::path& file) {
  KV_CHECK(j.contains(key), "{}: missing required field '{}'", file.string(), key);
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    throw Error(
        fmt::format("{}: field '{}' has the wrong type: {}", file.string(), key, j.at(key).dump()));
  }
}

template <class T>
T field_or(const json& j, const char* key, T dflt, const fs::path& file) {
  if (!j.contains(key) || j.at(key).is_null()) return dflt;
  return field<T>(j, key, file);
}

// Every key of config.json must be one kvscope computes with (read below) or one that
// cannot change the forward pass (bookkeeping, training-time dropout, generation defaults).
// Anything else may change the computation -- a llama's sliding_window, Phi's
// partial_rotary_factor, a quantization_config -- and running the model without it would
// give numbers that look right and are not, so it is refused by name.
void audit_config_keys(const json& j, const std::string& type, const fs::path& file) {
  static const std::set<std::string> computed = {
      "model_type", "hidden_act", "rope_scaling", "attention_bias", "mlp_bias", "hidden_size",
      "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
      "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
      "kvscope_positional", "tie_word_embeddings", "bos_token_id", "eos_token_id"};
  static const std::set<std::string> inert = {
      "architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype",
      "use_cache", "initializer_range", "attention_dropout", "hidden_dropout", "pad_token_id",
      "return_dict", "output_hidden_states", "output_attentions", "torchscript",
      "use_bfloat16", "pruned_heads", "tokenizer_class", "id2label", "label2id",
      "problem_type", "finetuning_task", "task_specific_params", "auto_map",
      "_attn_implementation_autoset", "attn_implementation", "max_length", "min_length",
      "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "num_beams",
      // Older HF Llama code split each matmul into pretraining_tp slices and summed them:
      // the same product, so it changes nothing beyond rounding (current code ignores it).
      "pretraining_tp"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (computed.count(k) || inert.count(k)) continue;
    // Fields that are harmless only at their "off" value.
    const json& v = it.value();
    if ((k == "sliding_window" || k == "use_sliding_window") &&
        (v.is_null() || (v.is_boolean() && !v.get<bool>())))
      continue;
    // Mistral's window is read below and applied by forward().
    if (k == "sliding_window" && type == "mistral") continue;
    // Qwen2 and Qwen3 read sliding_window and max_window_layers only when use_sliding_window
    // is true (refused above unless false), and their layer_types are then all full attention.
    if ((type == "qwen2" || type == "qwen3") &&
        (k == "sliding_window" || k == "max_window_layers")) {
      const json& u = j.contains("use_sliding_window") ? j["use_sliding_window"] : json(false);
      if (u.is_boolean() && !u.get<bool>()) continue;
    }
    if (k == "layer_types" && v.is_array()) {
      bool all_full = true;
      for (const json& e : v) all_full &= e == "full_attention";
      if (all_full) continue;
    }
    if (k == "partial_rotary_factor" && v.is_number() && v.get<double>() == 1.0) continue;
    std::string why = "kvscope does not implement it, and ignoring it could change the results";
    if (k == "sliding_window")
      why = "Hugging Face's LlamaAttention ignores it, so a value here is ambiguous";
    if (k == "partial_rotary_factor")
      why = "partial rotary embeddings are not implemented yet";
    if (k == "quantization_config") why = "quantized checkpoints are not supported";
    throw Error(fmt::format("{}: field '{}' = {} is not supported for model_type '{}' ({}); "
                            "the model is refused rather than computed wrongly",
                            file.string(), k, v.dump(), type, why));
  }
}

// rope_scaling: null, or {"rope_type" (or "type"): "default" | "linear" | "llama3", ...}.
// Other types (dynamic NTK, yarn, longrope, ...) and unknown keys are refused by name.
RopeScaling parse_rope_scaling(const json& j, const fs::path& file) {
  RopeScaling rs;
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return rs;
  const json& r = j["rope_scaling"];
  KV_CHECK(r.is_object(), "{}: field 'rope_scaling' must be an object or null, got {}",
           file.string(), r.dump());
  std::string type = "default";
  for (const char* k : {"rope_type", "type"})
    if (r.contains(k)) {
      KV_CHECK(r[k].is_string(), "{}: rope_scaling.{} must be a string, got {}", file.string(), k,
               r[k].dump());
      type = r[k].get<std::string>();
    }
  std::set<std::string> allowed = {"rope_type", "type"};
  auto number = [&](const char* k) {
    KV_CHECK(r.contains(k) && r[k].is_number(),
             "{}: rope_scaling of type '{}' needs a number '{}', got {}", file.string(), type, k,
             r.contains(k) ? r[k].dump() : "nothing");
    allowed.insert(k);
    return r[k].get<double>();
  };
  if (type == "default") {
    rs.kind = RopeScalingKind::kNone;
  } else if (type == "linear") {
    rs.kind = RopeScalingKind::kLinear;
    rs.factor = number("factor");
  } else if (type == "llama3") {
    rs.kind = RopeScalingKind::kLlama3;
    rs.factor = number("factor");
    rs.low_freq_factor = number("low_freq_factor");
    rs.high_freq_factor = number("high_freq_factor");
    const double orig = number("original_max_position_embeddings");
    KV_CHECK(orig >= 1 && orig <= double(1 << 24) && orig == std::floor(orig),
             "{}: rope_scaling.original_max_position_embeddings must be a positive integer, got {}",
             file.string(), orig);
    rs.original_max_position = int(orig);
  } else {
    throw Error(fmt::format("{}: rope_scaling type '{}' is not supported (supported: default, "
                            "linear, llama3); the model is refused rather than computed wrongly",
                            file.string(), type));
  }
  for (auto it = r.begin(); it != r.end(); ++it)
    KV_CHECK(allowed.count(it.key()),
             "{}: rope_scaling.{} = {} is not understood for type '{}' (expected only {})",
             file.string(), it.key(), it.value().dump(), type,
             fmt::format("{}", fmt::join(allowed, ", ")));
  return rs;
}

ModelConfig parse_hf_config(const fs::path& file) {
  const json j = read_json(file);
  KV_CHECK(j.is_object(), "{}: expected a JSON object", file.string());
  const std::string type = field_or<std::string>(j, "model_type", "llama", file);
  KV_CHECK(type == "llama" || type == "mistral" || type == "qwen2" || type == "qwen3",
           "{}: model_type '{}' is not supported (expected llama, mistral, qwen2 or qwen3)",
           file.string(), type);
  audit_config_keys(j, type, file);
  const std::string act = field_or<std::string>(j, "hidden_act", "silu", file);
  KV_CHECK(act == "silu", "{}: hidden_act '{}' is not supported (expected 'silu')", file.string(),
           act);
  ModelConfig c;
  c.arch = type;
  c.dim = field<int>(j, "hidden_size", file);
  c.hidden_dim = field<int>(j, "intermediate_size", file);
  c.n_layers = field<int>(j, "num_hidden_layers", file);
  c.n_heads = field<int>(j, "num_attention_heads", file);
  c.n_kv_heads = field_or<int>(j, "num_key_value_heads", c.n_heads, file);
  KV_CHECK(c.n_heads > 0, "{}: num_attention_heads must be positive, got {}", file.string(),
           c.n_heads);
  c.head_dim = field_or<int>(j, "head_dim", c.dim / c.n_heads, file);
  c.vocab_size = field<int>(j, "vocab_size", file);
  c.max_seq_len = field_or<int>(j, "max_position_embeddings", 2048, file);
  c.norm_eps = field_or<float>(j, "rms_norm_eps", 1e-6f, file);
  c.rope_theta = field_or<float>(j, "rope_theta", 10000.0f, file);
  c.rope_layout = RopeLayout::kRotateHalf;
  c.rope_scaling = parse_rope_scaling(j, file);
  if (type == "mistral")  // range-checked by validate() below
    c.sliding_window = field_or<int>(j, "sliding_window", 0, file);
  // kvscope extension for its own trained models: "kvscope_positional": rope|alibi|none.
  const std::string pos = field_or<std::string>(j, "kvscope_positional", "rope", file);
  if (pos == "rope")
    c.positional = PositionalKind::kRope;
  else if (pos == "alibi")
    c.positional = PositionalKind::kAlibi;
  else if (pos == "none")
    c.positional = PositionalKind::kNone;
  else
    throw Error(fmt::format("{}: kvscope_positional '{}' is not one of rope, alibi, none",
                            file.string(), pos));
  c.tied_embeddings = field_or<bool>(j, "tie_word_embeddings", false, file);
  if (type == "qwen2") {
    // Qwen2Attention: q/k/v projections always carry a bias, o_proj never; nothing in the
    // config says so. Its MLP has none.
    c.qkv_bias = true;
    KV_CHECK(!j.contains("attention_bias") && !j.contains("mlp_bias"),
             "{}: qwen2 has no attention_bias / mlp_bias fields (its q/k/v biases are fixed)",
             file.string());
  } else {
    // llama and qwen3: attention_bias covers q, k, v and o (Qwen3Attention likewise).
    c.qk_norm = type == "qwen3";
    c.qkv_bias = c.o_bias = field_or<bool>(j, "attention_bias", false, file);
    c.mlp_bias = field_or<bool>(j, "mlp_bias", false, file);
  }
  c.bos_id = field_or<int>(j, "bos_token_id", 1, file);
  // eos_token_id: one id, or a list of ids that all end a sequence (Llama 3).
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    const json& ids = j["eos_token_id"];
    KV_CHECK(!ids.empty(), "{}: field 'eos_token_id' is an empty list", file.string());
    for (size_t i = 0; i < ids.size(); ++i) {
      KV_CHECK(ids[i].is_number_integer(),
               "{}: field 'eos_token_id' must hold integers, got {} at index {}", file.string(),
               ids[i].dump(), i);
      (i == 0 ? c.eos_id : c.more_eos_ids.emplace_back()) = ids[i].get<int32_t>();
    }
  } else {
    c.eos_id = field_or<int>(j, "eos_token_id", 2, file);
  }
  validate(c, file.string());
  return c;
}

}  // namespace

Model load_hf_llama(const fs::path& dir) {
  const fs::path config_path = dir / "config.json";
  KV_CHECK(fs::exists(config_path), "{}: no config.json in the model directory", dir.string());
  Model m;
  m.name = fs::absolute(dir).lexically_normal().filename().string();
  if (m.name.empty())
    m.name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
  m.format = "hf-safetensors";
  m.source = dir;
  m.config = parse_hf_config(config_path);
  m.files.push_back(config_path);

  // Which files hold the tensors.
  std::vector<fs::path> shards;
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    const json idx = read_json(index_path);
    KV_CHECK(idx.contains("weight_map") && idx["weight_map"].is_object(),
             "{}: missing object 'weight_map'", index_path.string());
    std::set<std::string> names;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      KV_CHECK(it.value().is_string(), "{}: weight_map['{}'] must be a file name",
               index_path.string(), it.key());
      // Shards live in the model directory: a name that climbs out of it (or is absolute)
      // would make kvscope open any file the index names.
      const std::string n = it.value().get<std::string>();
      const fs::path rel(n);
      bool inside = !n.empty() && rel.is_relative() && !rel.has_root_name();
      for (const fs::path& part : rel) inside &= part != "..";
      KV_CHECK(inside,
               "{}: weight_map['{}'] = '{}' is not a file inside the model directory {} "
               "(expected a relative name such as model-00001-of-00002.safetensors)",
               index_path.string(), it.key(), n, dir.string());
      names.insert(n);
    }
    for (const auto& n : names) shards.push_back(dir / n);
    m.files.push_back(index_path);
  } else {
    KV_CHECK(fs::exists(dir / "model.safetensors"),
             "{}: neither model.safetensors nor model.safetensors.index.json found", dir.string());
    shards.push_back(dir / "model.safetensors");
  }

  std::map<std::string, Tensor> all;
  for (const auto& shard : shards) {
    SafetensorsFile f = open_safetensors(shard);
    for (auto& [name, e] : f.tensors) {
      KV_CHECK(!all.count(name), "{}: tensor '{}' appears in more than one shard", shard.string(),
               name);
      all[name] = e.tensor;
    }
    m.files.push_back(shard);
  }

  std::set<std::string> used;
  auto get = [&](const std::string& name) {
    auto it = all.find(name);
    KV_CHECK(it != all.end(), "{}: tensor '{}' is missing", dir.string(), name);
    used.insert(name);
    return it->second;
  };
  const ModelConfig& c = m.config;
  Weights& w = m.weights;
  const bool has_embed = all.count("model.embed_tokens.weight") > 0;
  const bool has_head = all.count("lm_head.weight") > 0;
  if (c.tied_embeddings) {
    // Tied checkpoints may store either name (tinystories656K keeps only lm_head.weight).
    KV_CHECK(has_embed || has_head,
             "{}: tied embeddings need model.embed_tokens.weight or lm_head.weight", dir.string());
    w.tok_embedding = get(has_embed ? "model.embed_tokens.weight" : "lm_head.weight");
    if (has_embed && has_head) used.insert("lm_head.weight");
    w.classifier = w.tok_embedding;
  } else {
    w.tok_embedding = get("model.embed_tokens.weight");
    w.classifier = get("lm_head.weight");
  }
  w.final_norm = get("model.norm.weight");
  w.layers.resize(size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerWeights& lw = w.layers[size_t(l)];
    lw.attn_norm = get(p + "input_layernorm.weight");
    lw.wq = get(p + "self_attn.q_proj.weight");
    lw.wk = get(p + "self_attn.k_proj.weight");
    lw.wv = get(p + "self_attn.v_proj.weight");
    lw.wo = get(p + "self_attn.o_proj.weight");
    lw.ffn_norm = get(p + "post_attention_layernorm.weight");
    lw.w_gate = get(p + "mlp.gate_proj.weight");
    lw.w_up = get(p + "mlp.up_proj.weight");
    lw.w_down = get(p + "mlp.down_proj.weight");
    if (c.qkv_bias) {
      lw.bq = get(p + "self_attn.q_proj.bias");
      lw.bk = get(p + "self_attn.k_proj.bias");
      lw.bv = get(p + "self_attn.v_proj.bias");
    }
    if (c.o_bias) lw.bo = get(p + "self_attn.o_proj.bias");
    if (c.qk_norm) {
      lw.q_norm = get(p + "self_attn.q_norm.weight");
      lw.k_norm = get(p + "self_attn.k_norm.weight");
    }
    if (c.mlp_bias) {
      lw.b_gate = get(p + "mlp.gate_proj.bias");
      lw.b_up = get(p + "mlp.up_proj.bias");
      lw.b_down = get(p + "mlp.down_proj.bias");
    }
  }
  for (const auto& [name, t] : all) {
    // Old exports carry the RoPE inverse frequencies as buffers; they are recomputed.
    if (used.count(name) || name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    throw Error(
        fmt::format("{}: unexpected tensor '{}' (layer index beyond num_hidden_layers {}, a "
                    "bias the config does not announce (attention_bias / mlp_bias), or not a "
                    "{} weight)",
                    dir.string(), name, c.n_layers, c.arch));
  }
  check_shapes(m);
  return m;
}

}  // namespace kvscope
