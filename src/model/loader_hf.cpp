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
#include <type_traits>

#include "kvscope/io/error.hpp"
#include "kvscope/io/json_util.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/safetensors.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// config.json and the index are small; a path that is a device or a huge file is refused
// before it fills the memory.
constexpr size_t kJsonReadLimit = size_t(64) << 20;

json read_json(const fs::path& p) {
  return parse_json(read_file_bytes(p, kJsonReadLimit), p.string());
}

// While parse_hf_config reads a config.json: its floating-point numbers as written, so a
// refused value is quoted exactly ("1e39", not dump()'s "1e+39").
thread_local const std::map<std::string, std::string>* t_written = nullptr;

// The value at JSON pointer `path` of the config.json being read, as written.
std::string written(const json& v, const std::string& path) {
  if (v.is_number_float() && t_written != nullptr) {
    const auto it = t_written->find(path);
    if (it != t_written->end()) return it->second;
  }
  return json_brief(v);
}

// Strings and booleans, of exactly that JSON type.
template <class T>
T field(const json& j, const char* key, const fs::path& file) {
  static_assert(std::is_same_v<T, std::string> || std::is_same_v<T, bool>,
                "numbers go through integer() / number()");
  KV_CHECK(j.contains(key), "{}: missing required field '{}'", file.string(), key);
  const json& v = j.at(key);
  constexpr bool kBool = std::is_same_v<T, bool>;
  KV_CHECK(kBool ? v.is_boolean() : v.is_string(), "{}: field '{}' must be {}, got {}",
           file.string(), key, kBool ? "true or false" : "a string",
           written(v, std::string("/") + key));
  return v.get<T>();
}

template <class T>
T field_or(const json& j, const char* key, T dflt, const fs::path& file) {
  if (!j.contains(key) || j.at(key).is_null()) return dflt;
  return field<T>(j, key, file);
}

// An integer field: a JSON integer (not 2.0, 2.9 or true) in [lo, hi], shown as written
// when it is not.
int integer(const json& j, const char* key, const fs::path& file, int64_t lo, int64_t hi) {
  KV_CHECK(j.contains(key), "{}: missing required field '{}'", file.string(), key);
  const std::optional<int64_t> v = json_integer(j.at(key), lo, hi);
  KV_CHECK(v.has_value(), "{}: field '{}' must be an integer in [{}, {}], got {}", file.string(),
           key, lo, hi, written(j.at(key), std::string("/") + key));
  return int(*v);
}

int integer_or(const json& j, const char* key, int dflt, const fs::path& file, int64_t lo,
               int64_t hi) {
  if (!j.contains(key) || j.at(key).is_null()) return dflt;
  return integer(j, key, file, lo, hi);
}

// A number field that must be finite and, read into a float, stay finite and within
// [lo, hi] (1e39 overflows a float; 1e-50 underflows to 0 and is refused by lo > 0).
double number_or(const json& j, const char* key, double dflt, const fs::path& file, double lo,
                 double hi) {
  if (!j.contains(key) || j.at(key).is_null()) return dflt;
  const std::optional<double> v = json_finite(j.at(key));
  const bool ok = v && float(*v) >= lo && float(*v) <= hi && std::isfinite(float(*v));
  KV_CHECK(ok, "{}: field '{}' must be a finite number in [{}, {}]{}, got {}", file.string(), key,
           lo, hi, v ? " (as a 32-bit float)" : "", written(j.at(key), std::string("/") + key));
  return *v;
}

constexpr int64_t kSizeLimit = int64_t(1) << 24;  // validate()'s bound on every size
constexpr double kFloatMax = 3.4028234663852886e38;

// Every key of config.json must be one kvscope computes with (read below) or one that
// cannot change the forward pass (bookkeeping, training-time dropout, generation defaults).
// Anything else may change the computation -- a llama's sliding_window, a llama's
// partial_rotary_factor, a quantization_config -- and running the model without it would
// give numbers that look right and are not, so it is refused by name.
void audit_config_keys(const json& j, const std::string& type, Family f, const fs::path& file) {
  const bool gemma = traits(f).gemma;
  static const std::set<std::string> computed = {"model_type",
                                                 "hidden_act",
                                                 "rope_scaling",
                                                 "attention_bias",
                                                 "mlp_bias",
                                                 "hidden_size",
                                                 "intermediate_size",
                                                 "num_hidden_layers",
                                                 "num_attention_heads",
                                                 "num_key_value_heads",
                                                 "head_dim",
                                                 "vocab_size",
                                                 "max_position_embeddings",
                                                 "rms_norm_eps",
                                                 "rope_theta",
                                                 "kvscope_positional",
                                                 "tie_word_embeddings",
                                                 "bos_token_id",
                                                 "eos_token_id"};
  // Read below for these families only.
  static const std::set<std::string> gemma_computed = {
      "hidden_activation",       "query_pre_attn_scalar", "attn_logit_softcapping",
      "final_logit_softcapping", "sliding_window",        "layer_types"};
  static const std::set<std::string> gemma3_computed = {"rope_local_base_freq",
                                                        "sliding_window_pattern"};
  static const std::set<std::string> phi3_computed = {"original_max_position_embeddings",
                                                      "partial_rotary_factor", "sliding_window"};
  static const std::set<std::string> inert = {
      "architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache",
      "initializer_range", "attention_dropout", "hidden_dropout", "pad_token_id", "return_dict",
      "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "pruned_heads",
      "tokenizer_class", "id2label", "label2id", "problem_type", "finetuning_task",
      "task_specific_params", "auto_map", "_attn_implementation_autoset", "attn_implementation",
      "max_length", "min_length", "do_sample", "temperature", "top_k", "top_p",
      "repetition_penalty", "num_beams",
      // Older HF Llama code split each matmul into pretraining_tp slices and summed them:
      // the same product, so it changes nothing beyond rounding (current code ignores it).
      "pretraining_tp",
      // Gemma: the KV-cache class generate() picks (hybrid: window-sized caches on sliding
      // layers), same attention either way.
      "cache_implementation",
      // Phi-3: dropout probabilities, inactive at inference.
      "resid_pdrop", "embd_pdrop"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (computed.count(k) || inert.count(k)) continue;
    if (gemma && gemma_computed.count(k)) continue;
    if (f == Family::kGemma3 && gemma3_computed.count(k)) continue;
    if (f == Family::kPhi3 && phi3_computed.count(k)) continue;
    // Qwen2 / Qwen3: read by parse_qwen_window below.
    if ((f == Family::kQwen2 || f == Family::kQwen3) &&
        (k == "use_sliding_window" || k == "sliding_window" || k == "max_window_layers" ||
         k == "layer_types"))
      continue;
    const json& v = it.value();
    // Gemma's MLP reads hidden_activation; hidden_act is a leftover it never reads.
    if (gemma && k == "hidden_act") continue;
    // Gemma 2's old name of the window, harmless while it agrees.
    if (f == Family::kGemma2 && k == "sliding_window_size" && j.contains("sliding_window") &&
        v == j["sliding_window"])
      continue;
    // Fields that are harmless only at their "off" value.
    if ((k == "sliding_window" || k == "use_sliding_window") &&
        (v.is_null() || (v.is_boolean() && !v.get<bool>())))
      continue;
    if (k == "use_bidirectional_attention" && v.is_boolean() && !v.get<bool>()) continue;
    // Phi-4-mini's remote-code fields, at the values where that code computes what
    // transformers' Phi3 does (which ignores them).
    if (f == Family::kPhi3 && ((k == "lm_head_bias" && v == false) ||
                               ((k == "full_attn_mod" || k == "interpolate_factor") && v == 1)))
      continue;
    // Mistral's window is read below and applied by forward().
    if (k == "sliding_window" && f == Family::kMistral) continue;
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
      why = "partial rotary is applied by Hugging Face only in phi3 among the supported families";
    if (k == "quantization_config") why = "quantized checkpoints are not supported";
    throw Error(
        fmt::format("{}: field '{}' = {} is not supported for model_type '{}' ({}); "
                    "the model is refused rather than computed wrongly",
                    file.string(), k, written(v, "/" + k), type, why));
  }
}

// rope_scaling: null, or {"rope_type" (or "type"): "default" | "linear" | "llama3", ...}.
// Other types (dynamic NTK, yarn, longrope, ...) and unknown keys are refused by name.
RopeScaling parse_rope_scaling(const json& j, const std::string& model_type, Family f,
                               const fs::path& file) {
  RopeScaling rs;
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return rs;
  const json& r = j["rope_scaling"];
  KV_CHECK(r.is_object(), "{}: field 'rope_scaling' must be an object or null, got {}",
           file.string(), json_brief(r));
  std::string type = "default";
  for (const char* k : {"rope_type", "type"})
    if (r.contains(k)) {
      KV_CHECK(r[k].is_string(), "{}: rope_scaling.{} must be a string, got {}", file.string(), k,
               json_brief(r[k]));
      type = r[k].get<std::string>();
    }
  std::set<std::string> allowed = {"rope_type", "type"};
  auto number = [&](const char* k) {
    const std::optional<double> v = r.contains(k) ? json_finite(r[k]) : std::nullopt;
    KV_CHECK(v.has_value(), "{}: rope_scaling of type '{}' needs a finite number '{}', got {}",
             file.string(), type, k,
             r.contains(k) ? written(r[k], std::string("/rope_scaling/") + k) : "nothing");
    allowed.insert(k);
    return *v;
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
  } else if (type == "longrope" && f == Family::kPhi3) {
    // Phi-3: per-frequency divisors. transformers derives the scaling from
    // max_position_embeddings / original_max_position_embeddings (read by the caller) and
    // ignores a "factor" here; attention_factor, when given, replaces the derived one.
    rs.kind = RopeScalingKind::kLongrope;
    for (const char* k : {"short_factor", "long_factor"}) {
      KV_CHECK(r.contains(k) && r[k].is_array(),
               "{}: rope_scaling of type 'longrope' needs a "
               "list '{}', got {}",
               file.string(), k, r.contains(k) ? json_brief(r[k]) : "nothing");
      allowed.insert(k);
      auto& dst = std::string(k) == "short_factor" ? rs.short_factor : rs.long_factor;
      for (size_t i = 0; i < r[k].size(); ++i) {
        const std::optional<double> e = json_finite(r[k][i]);
        KV_CHECK(e && *e > 0, "{}: rope_scaling.{}[{}] must be a positive finite number, got {}",
                 file.string(), k, i, written(r[k][i], fmt::format("/rope_scaling/{}/{}", k, i)));
        dst.push_back(*e);
      }
    }
    allowed.insert("factor");
    rs.attention_factor = 0.0;  // derived by the caller unless given (0 given is refused)
    if (r.contains("attention_factor") && !r["attention_factor"].is_null()) {
      rs.attention_factor = number("attention_factor");
      KV_CHECK(rs.attention_factor > 0,
               "{}: rope_scaling.attention_factor must be positive "
               "(it multiplies cos and sin), got {}",
               file.string(), written(r["attention_factor"], "/rope_scaling/attention_factor"));
    }
    allowed.insert("attention_factor");
  } else {
    throw Error(
        fmt::format("{}: rope_scaling type '{}' is not supported for model_type '{}' "
                    "(supported: default, linear, llama3{}); the model is refused rather "
                    "than computed wrongly",
                    file.string(), type, model_type, f == Family::kPhi3 ? ", longrope" : ""));
  }
  for (auto it = r.begin(); it != r.end(); ++it)
    KV_CHECK(allowed.count(it.key()),
             "{}: rope_scaling.{} = {} is not understood for type '{}' (expected only {})",
             file.string(), it.key(), json_brief(it.value()), type,
             fmt::format("{}", fmt::join(allowed, ", ")));
  return rs;
}

// Sliding layers: layer_types when given (as transformers does), else Gemma's rule: every
// pattern-th layer global, the rest sliding ((i + 1) % pattern != 0).
std::vector<uint8_t> layer_types_or_pattern(const json& j, int n_layers, int dflt_pattern,
                                            const fs::path& file) {
  std::vector<uint8_t> out(static_cast<size_t>(n_layers));
  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    const json& lt = j["layer_types"];
    KV_CHECK(lt.is_array() && int(lt.size()) == n_layers,
             "{}: field 'layer_types' must list {} layers (num_hidden_layers), got {}",
             file.string(), n_layers, json_brief(lt));
    for (int i = 0; i < n_layers; ++i) {
      KV_CHECK(lt[size_t(i)] == "sliding_attention" || lt[size_t(i)] == "full_attention",
               "{}: layer_types[{}] = {} (expected sliding_attention or full_attention)",
               file.string(), i, json_brief(lt[size_t(i)]));
      out[size_t(i)] = lt[size_t(i)] == "sliding_attention";
    }
    return out;
  }
  const int pattern = integer_or(j, "sliding_window_pattern", dflt_pattern, file, 1, 1 << 16);
  for (int i = 0; i < n_layers; ++i) out[size_t(i)] = (i + 1) % pattern != 0;
  return out;
}

// Qwen2 / Qwen3's optional windows (Qwen2Config): with use_sliding_window, layers from
// max_window_layers on slide over sliding_window keys (or as layer_types says); without it
// every layer is global whatever sliding_window holds.
void parse_qwen_window(const json& j, ModelConfig& c, const fs::path& file) {
  const bool use = field_or<bool>(j, "use_sliding_window", false, file);
  const bool typed = j.contains("layer_types") && !j["layer_types"].is_null();
  if (!use) {
    if (typed)
      for (const json& e : j["layer_types"])
        KV_CHECK(e == "full_attention",
                 "{}: layer_types holds {} but use_sliding_window is "
                 "false, which makes every layer global in transformers: ambiguous, refused",
                 file.string(), json_brief(e));
    return;
  }
  if (j.contains("sliding_window") && j["sliding_window"].is_null()) return;  // no window
  c.sliding_window = integer_or(j, "sliding_window", 4096, file, 1, kSizeLimit);
  if (typed) {
    c.sliding_layers = layer_types_or_pattern(j, c.n_layers, 1, file);
    return;
  }
  const int mwl = integer_or(j, "max_window_layers", 28, file, 0, 1 << 16);
  c.sliding_layers.resize(size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) c.sliding_layers[size_t(l)] = l >= mwl;
}

// Gemma 2 and 3 (transformers' Gemma2/Gemma3 text models).
void parse_gemma(const json& j, const std::string& type, ModelConfig& c, const fs::path& file) {
  const FamilyTraits& t = traits(c.family);
  const std::string act = field_or<std::string>(j, "hidden_activation", "gelu_pytorch_tanh", file);
  KV_CHECK(act == "gelu_pytorch_tanh",
           "{}: hidden_activation '{}' is not supported for {} (expected 'gelu_pytorch_tanh')",
           file.string(), act, type);
  c.mlp_act = MlpActivation::kGeluTanh;
  c.norm_offset = 1.0f;  // Gemma RMSNorm: x / rms(x) * (1 + w)
  // hidden_size**0.5, as a float32 tensor multiplies the float32 embedding.
  c.embed_scale = float(std::sqrt(double(c.dim)));
  c.sandwich_norms = true;
  // The scale qpas^-1/2 must be a positive float: 0 would mean "1/sqrt(head_dim)".
  const double qpas = number_or(j, "query_pre_attn_scalar", 256.0, file, 1e-30, 1e30);
  c.attn_scale = float(std::pow(qpas, -0.5));
  // Gemma2Config defaults to caps 50 / 30 when the keys are absent; Gemma 3 to none.
  auto cap = [&](const char* k, double dflt) {
    if (!j.contains(k)) return float(dflt);
    if (j[k].is_null()) return 0.0f;
    return float(number_or(j, k, 0.0, file, 1e-30, kFloatMax));
  };
  c.attn_softcap = cap("attn_logit_softcapping", t.attn_softcap);
  c.final_softcap = cap("final_logit_softcapping", t.final_softcap);
  c.sliding_window = !j.contains("sliding_window") ? 4096
                     : j["sliding_window"].is_null()
                         ? 0
                         : integer(j, "sliding_window", file, 0, kSizeLimit);
  c.sliding_layers = layer_types_or_pattern(j, c.n_layers, t.window_pattern, file);
  c.qk_norm = t.qk_norm;  // Gemma3Attention's q_norm / k_norm, (1 + w) like every Gemma norm
  if (base_of(c.family) == Family::kGemma3) {
    // 0 would mean "the global theta" inside kvscope: a positive base is required.
    c.rope_local_theta =
        float(number_or(j, "rope_local_base_freq", 10000.0, file, 1e-30, kFloatMax));
  }
  // Gemma's q/k/v/o carry biases exactly when attention_bias says so; no MLP bias.
  c.qkv_bias = c.o_bias = field_or<bool>(j, "attention_bias", false, file);
  KV_CHECK(!j.contains("mlp_bias") || j["mlp_bias"] == false,
           "{}: field 'mlp_bias' = {} is not supported for {} (its MLP has no bias)", file.string(),
           json_brief(j["mlp_bias"]), type);
}

// Phi-3 (transformers' Phi3: fused qkv_proj / gate_up_proj, partial rotary, longrope).
void parse_phi3(const json& j, ModelConfig& c, const fs::path& file) {
  for (const char* k : {"attention_bias", "mlp_bias"})
    KV_CHECK(!j.contains(k) || j[k] == false,
             "{}: field '{}' = {} is not supported for phi3 (transformers' Phi3 has no biases, "
             "so a true here is ambiguous)",
             file.string(), k, json_brief(j[k]));
  const double prf = number_or(j, "partial_rotary_factor", 1.0, file, 1e-30, 1.0);
  c.rotary_dim = int(c.head_dim * prf);  // int(head_dim * partial_rotary_factor), as HF
  // transformers would rotate nothing at all (an empty inverse-frequency table), while 0
  // means "all of head_dim" here: refused rather than computed as full rotary.
  KV_CHECK(c.rotary_dim > 0,
           "{}: partial_rotary_factor {} x head_dim {} gives {} rotary "
           "dimensions (int(head_dim * factor)); at least 2 are needed",
           file.string(), written(j["partial_rotary_factor"], "/partial_rotary_factor"), c.head_dim,
           c.rotary_dim);
  // Phi3's window applies to every layer; 0 (null) means none.
  c.sliding_window = integer_or(j, "sliding_window", 0, file, 0, kSizeLimit);
  const int original = integer_or(j, "original_max_position_embeddings", 4096, file, 1, kSizeLimit);
  RopeScaling& rs = c.rope_scaling;
  if (rs.kind == RopeScalingKind::kLongrope) {
    rs.original_max_position = original;
    rs.factor = double(c.max_seq_len) / original;
    if (rs.attention_factor == 0.0)  // the longrope paper's default, as transformers
      rs.attention_factor = rs.factor <= 1.0
                                ? 1.0
                                : std::sqrt(1.0 + std::log(rs.factor) / std::log(double(original)));
  }
}

ModelConfig parse_hf_config(const fs::path& file) {
  const std::string text = read_file_bytes(file, kJsonReadLimit);
  const json j = parse_json(text, file.string());
  const std::map<std::string, std::string> floats = json_float_texts(text);
  t_written = &floats;
  struct Reset {
    ~Reset() { t_written = nullptr; }
  } reset;
  KV_CHECK(j.is_object(), "{}: expected a JSON object", file.string());
  const std::string type = field_or<std::string>(j, "model_type", "llama", file);
  KV_CHECK(type != "gemma3",
           "{}: model_type 'gemma3' is the multimodal Gemma 3 (text_config, a vision tower); "
           "only its text-only form 'gemma3_text' (Gemma3ForCausalLM, e.g. gemma-3-1b) is "
           "supported",
           file.string());
  const std::optional<Family> family = family_from_hf(type);
  KV_CHECK(family.has_value(), "{}: model_type '{}' is not supported (expected one of {})",
           file.string(), type, hf_model_types());
  const FamilyTraits& t = traits(*family);
  const Family base = t.base;  // the code path: a registered family takes its base's
  audit_config_keys(j, type, base, file);
  if (!t.gemma) {
    const std::string act = field_or<std::string>(j, "hidden_act", "silu", file);
    KV_CHECK(act == "silu", "{}: hidden_act '{}' is not supported (expected 'silu')", file.string(),
             act);
  }
  ModelConfig c;
  c.family = *family;
  c.dim = integer(j, "hidden_size", file, 1, kSizeLimit);
  c.hidden_dim = integer(j, "intermediate_size", file, 1, kSizeLimit);
  c.n_layers = integer(j, "num_hidden_layers", file, 1, 1 << 16);
  c.n_heads = integer(j, "num_attention_heads", file, 1, kSizeLimit);
  c.n_kv_heads = integer_or(j, "num_key_value_heads", c.n_heads, file, 1, kSizeLimit);
  // Defaults of absent keys: the family's row (model/family.cpp).
  c.head_dim =
      integer_or(j, "head_dim", t.head_dim ? t.head_dim : c.dim / c.n_heads, file, 1, kSizeLimit);
  c.vocab_size = integer(j, "vocab_size", file, 1, kSizeLimit);
  c.max_seq_len = integer_or(j, "max_position_embeddings", t.context, file, 1, kSizeLimit);
  c.norm_eps = float(number_or(j, "rms_norm_eps", t.norm_eps, file, 1e-30, 1.0));
  c.rope_theta = float(number_or(j, "rope_theta", t.rope_theta, file, 1e-30, kFloatMax));
  c.rope_layout = RopeLayout::kRotateHalf;
  c.rope_scaling = parse_rope_scaling(j, type, base, file);
  if (base == Family::kMistral)  // range-checked by validate() below
    c.sliding_window = integer_or(j, "sliding_window", 0, file, 0, kSizeLimit);
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
  // Gemma ties its classifier to the embedding unless told otherwise.
  c.tied_embeddings = field_or<bool>(j, "tie_word_embeddings", t.gemma, file);
  if (base == Family::kQwen2 || base == Family::kQwen3) parse_qwen_window(j, c, file);
  if (t.fixed_qkv_bias) {
    // Qwen2Attention: q/k/v projections always carry a bias, o_proj never; nothing in the
    // config says so. Its MLP has none.
    c.qkv_bias = true;
    KV_CHECK(!j.contains("attention_bias") && !j.contains("mlp_bias"),
             "{}: qwen2 has no attention_bias / mlp_bias fields (its q/k/v biases are fixed)",
             file.string());
  } else if (t.gemma) {
    parse_gemma(j, type, c, file);
  } else if (base == Family::kPhi3) {  // partial rotary, longrope, fused tensors
    parse_phi3(j, c, file);
  } else {
    // llama, mistral and qwen3: attention_bias covers q, k, v and o (Qwen3Attention likewise).
    c.qk_norm = t.qk_norm;
    c.qkv_bias = c.o_bias = field_or<bool>(j, "attention_bias", false, file);
    c.mlp_bias = field_or<bool>(j, "mlp_bias", false, file);
  }
  // Token ids: non-negative (validate() then holds them inside the vocabulary).
  c.bos_id = integer_or(j, "bos_token_id", 1, file, 0, INT32_MAX);
  // eos_token_id: one id, or a list of ids that all end a sequence (Llama 3).
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    const json& ids = j["eos_token_id"];
    KV_CHECK(!ids.empty(), "{}: field 'eos_token_id' is an empty list", file.string());
    for (size_t i = 0; i < ids.size(); ++i) {
      const std::optional<int64_t> id = json_integer(ids[i], 0, INT32_MAX);
      KV_CHECK(id.has_value(),
               "{}: field 'eos_token_id' must hold integers in [0, {}], got {} "
               "at index {}",
               file.string(), INT32_MAX, written(ids[i], fmt::format("/eos_token_id/{}", i)), i);
      (i == 0 ? c.eos_id : c.more_eos_ids.emplace_back()) = int32_t(*id);
      c.stated_special_ids.emplace_back(fmt::format("eos_token_id[{}]", i), int32_t(*id));
    }
  } else {
    c.eos_id = integer_or(j, "eos_token_id", 2, file, 0, INT32_MAX);
    if (j.contains("eos_token_id") && !j["eos_token_id"].is_null())
      c.stated_special_ids.emplace_back("eos_token_id", c.eos_id);
  }
  if (j.contains("bos_token_id") && !j["bos_token_id"].is_null())
    c.stated_special_ids.emplace_back("bos_token_id", c.bos_id);
  // pad_token_id is not used to compute anything, but a stated one names a token the
  // tokenizer must have. Negative values (-1 in some conversions) mean "none".
  if (j.contains("pad_token_id") && !j["pad_token_id"].is_null()) {
    const std::optional<int64_t> pad = json_integer(j["pad_token_id"], -1, INT32_MAX);
    KV_CHECK(pad.has_value(),
             "{}: field 'pad_token_id' must be an integer in [-1, {}] or null, "
             "got {}",
             file.string(), INT32_MAX, written(j["pad_token_id"], "/pad_token_id"));
    if (*pad >= 0) c.stated_special_ids.emplace_back("pad_token_id", int32_t(*pad));
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
  // Before allocating a layer table for num_hidden_layers (up to 2^24 pass validate()), the
  // last layer must be there: a lying count is refused instead of exhausting memory.
  const std::string last = fmt::format("model.layers.{}.input_layernorm.weight", c.n_layers - 1);
  KV_CHECK(all.count(last), "{}: num_hidden_layers is {} but tensor '{}' is missing", dir.string(),
           c.n_layers, last);
  w.layers.resize(size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerWeights& lw = w.layers[size_t(l)];
    if (traits(c.family).fused) {
      // Fused: qkv_proj rows are [Q; K; V], gate_up_proj rows [gate; up] (chunk(2) order).
      split_fused_qkv(get(p + "self_attn.qkv_proj.weight"), c, dir.string(), lw);
      split_fused_gate_up(get(p + "mlp.gate_up_proj.weight"), c, dir.string(), lw);
    }
    for (const SlotRow& r : layer_slots()) {
      if (!r.present(c) || fused_slot(r.slot, c)) continue;
      const char* name = hf_layer_name(r.slot, c);
      KV_CHECK(name != nullptr, "{}: a {} model's '{}' has no Hugging Face tensor", dir.string(),
               family_name(c.family), r.name);
      lw.*r.member = get(p + name);
    }
  }
  for (const auto& [name, t] : all) {
    // Old exports carry the RoPE inverse frequencies as buffers; they are recomputed.
    if (used.count(name) || name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    throw Error(
        fmt::format("{}: unexpected tensor '{}' (layer index beyond num_hidden_layers {}, a "
                    "bias the config does not announce (attention_bias / mlp_bias), or not a "
                    "{} weight)",
                    dir.string(), name, c.n_layers, family_name(c.family)));
  }
  check_shapes(m);
  return m;
}

}  // namespace kvscope
