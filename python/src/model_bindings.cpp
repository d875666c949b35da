// kvscope.Model: a loaded model and its tokenizer, with run_with_cache (Q, K before and
// after RoPE, V, the attention output and the attention pattern of every layer and head,
// captured by the same ForwardObserver seam `kvscope dump` writes from), generate and
// perplexity.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/generate.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "kvscope/runtime/threads.hpp"

namespace kvscope::python {

namespace {

struct PyModel {
  std::shared_ptr<LoadedModel> lm;
  int threads = 0;
  const Model& model() const { return lm->model; }
  const Tokenizer& tok() const { return *lm->tokenizer; }
};

// ids as C++ values, each checked against the embedding (a wrong id would index past it).
std::vector<int32_t> checked_ids(const Model& m, const std::vector<int64_t>& ids,
                                 const char* what) {
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    KV_CHECK(ids[i] >= 0 && ids[i] < m.config.vocab_size,
             "{}: token {} is id {}, outside the vocabulary of model '{}' [0, {})", what, i, ids[i],
             m.name, m.config.vocab_size);
    out.push_back(int32_t(ids[i]));
  }
  return out;
}

py::dict config_dict(const Model& m) {
  const ModelConfig& c = m.config;
  py::dict d;
  d["name"] = m.name;
  d["format"] = m.format;
  d["source"] = m.source.string();
  d["arch"] = family_name(c.family);
  d["dim"] = c.dim;
  d["hidden_dim"] = c.hidden_dim;
  d["n_layers"] = c.n_layers;
  d["n_heads"] = c.n_heads;
  d["n_kv_heads"] = c.n_kv_heads;
  d["head_dim"] = c.head_dim;
  d["vocab_size"] = c.vocab_size;
  d["max_seq_len"] = c.max_seq_len;
  d["norm_eps"] = c.norm_eps;
  d["positional"] = positional_name(c.positional);
  d["rope_layout"] = rope_layout_name(c.rope_layout);
  d["rope_theta"] = c.rope_theta;
  d["rope_scaling"] = rope_scaling_name(c.rope_scaling.kind);
  d["rotary_dim"] = c.rot_dim();
  d["tied_embeddings"] = c.tied_embeddings;
  d["qkv_bias"] = c.qkv_bias;
  d["o_bias"] = c.o_bias;
  d["mlp_bias"] = c.mlp_bias;
  d["qk_norm"] = c.qk_norm;
  d["sliding_window"] = c.sliding_window;
  d["mlp_activation"] = mlp_activation_name(c.mlp_act);
  d["attn_softcap"] = c.attn_softcap;
  d["final_softcap"] = c.final_softcap;
  d["bos_id"] = c.bos_id;
  d["eos_id"] = c.eos_id;
  d["parameters"] = parameter_count(m);
  d["stored_dtypes"] = m.stored_dtypes;
  return d;
}

// The tensors run_with_cache can return; the first five are the dump's (kv/kv_dump.hpp).
const std::vector<std::string> kNames = {"q", "k_pre_rope", "k", "v", "attn_out", "pattern"};

// Writes each requested capture straight into the numpy arrays (allocated beforehand,
// with the GIL held): [layers asked, heads, T, head_dim] per tensor, [layers asked,
// n_heads, T, T] for the pattern.
class CacheObserver : public ForwardObserver {
 public:
  CacheObserver(const ModelConfig& c, int T, std::vector<int> slot_of_layer)
      : c_(c), T_(T), slot_(std::move(slot_of_layer)) {}
  float* dest[5] = {};  // q, k_pre_rope, k, v, attn_out: base of the array, or null
  float* pattern = nullptr;

  float* at(int kind, int layer, int heads) const {
    const int s = slot_[size_t(layer)];
    if (s < 0 || !dest[kind]) return nullptr;
    return dest[kind] + size_t(s) * heads * T_ * c_.head_dim;
  }
  float* capture_target(int layer, CaptureKind kind, size_t) override {
    switch (kind) {
      case CaptureKind::kQ:
        return at(0, layer, c_.n_heads);
      case CaptureKind::kKPreRope:
        return at(1, layer, c_.n_kv_heads);
      case CaptureKind::kK:
        return at(2, layer, c_.n_kv_heads);
      case CaptureKind::kV:
        return at(3, layer, c_.n_kv_heads);
    }
    return nullptr;
  }
  bool wants_attention() const override { return pattern != nullptr; }
  void on_layer(const LayerCapture& cap) override {
    const size_t hd = size_t(c_.head_dim), T = size_t(T_);
    // A capture the forward pass wrote elsewhere (it may ignore a target) is copied.
    const float* src[4] = {cap.q, cap.k_pre_rope, cap.k, cap.v};
    const int heads[4] = {c_.n_heads, c_.n_kv_heads, c_.n_kv_heads, c_.n_kv_heads};
    for (int kind = 0; kind < 4; ++kind) {
      float* d = at(kind, cap.layer, heads[kind]);
      if (d && src[kind] && src[kind] != d)
        std::memcpy(d, src[kind], size_t(heads[kind]) * T * hd * sizeof(float));
    }
    // attn_out arrives [T, n_heads * head_dim]; the dump stores it [n_heads, T, head_dim].
    if (float* d = at(4, cap.layer, c_.n_heads))
      for (size_t h = 0; h < size_t(c_.n_heads); ++h)
        for (size_t t = 0; t < T; ++t)
          std::memcpy(d + (h * T + t) * hd, cap.attn_out + t * c_.n_heads * hd + h * hd,
                      hd * sizeof(float));
  }
  void on_attention(const AttentionRows& r) override {
    const int s = slot_[size_t(r.layer)];
    if (s < 0 || !pattern) return;
    const size_t T = size_t(T_);
    float* base = pattern + (size_t(s) * c_.n_heads + size_t(r.head)) * T * T;
    const size_t cols = std::min(size_t(r.n_keys), T);
    for (int i = 0; i < r.n_q; ++i)
      std::memcpy(base + size_t(r.q_begin + i) * T, r.weights + size_t(i) * r.n_keys,
                  cols * sizeof(float));
  }

 private:
  const ModelConfig& c_;
  int T_;
  std::vector<int> slot_;  // [n_layers]: index in the arrays, -1 when not asked
};

py::tuple run_with_cache(const PyModel& pm, const std::vector<int64_t>& ids_in,
                         const std::vector<std::string>& names,
                         const std::optional<std::vector<int>>& layers_in, bool allow_extrapolation,
                         int64_t max_pattern_bytes) {
  const Model& m = pm.model();
  const ModelConfig& c = m.config;
  const std::vector<int32_t> ids = checked_ids(m, ids_in, "run_with_cache: ids");
  const int T = int(ids.size());
  KV_CHECK(T > 0, "run_with_cache: ids is empty; expected at least one token");
  KV_CHECK(T <= c.max_seq_len || allow_extrapolation,
           "run_with_cache: {} ids exceed the context of {} tokens model '{}' was trained for; "
           "pass allow_extrapolation=True to run beyond it",
           T, c.max_seq_len, m.name);
  std::vector<int> want;  // index into kNames
  for (const std::string& n : names) {
    const auto it = std::find(kNames.begin(), kNames.end(), n);
    KV_CHECK(it != kNames.end(),
             "run_with_cache: names: unknown tensor '{}' (known: q, k_pre_rope, k, v, attn_out, "
             "pattern)",
             n);
    const int k = int(it - kNames.begin());
    KV_CHECK(std::find(want.begin(), want.end(), k) == want.end(),
             "run_with_cache: names: '{}' listed twice", n);
    want.push_back(k);
  }
  KV_CHECK(!c.compressed_keys() || std::find(want.begin(), want.end(), 1) == want.end(),
           "run_with_cache: model '{}' compresses its keys after RoPE (a reduced model): it has "
           "no k_pre_rope",
           m.name);
  std::vector<int> layers;
  if (layers_in) {
    layers = *layers_in;
  } else {
    for (int l = 0; l < c.n_layers; ++l) layers.push_back(l);
  }
  std::vector<int> slot(size_t(c.n_layers), -1);
  for (size_t i = 0; i < layers.size(); ++i) {
    const int l = layers[i];
    KV_CHECK(l >= 0 && l < c.n_layers,
             "run_with_cache: layers[{}] is {}; model '{}' has layers 0..{}", i, l, m.name,
             c.n_layers - 1);
    KV_CHECK(slot[size_t(l)] < 0, "run_with_cache: layers: layer {} listed twice", l);
    slot[size_t(l)] = int(i);
  }
  const py::ssize_t L = py::ssize_t(layers.size()), hd = c.head_dim;
  CacheObserver obs(c, T, slot);
  py::dict cache;
  for (int k : want) {
    if (k == 5) {
      const int64_t bytes = int64_t(L) * c.n_heads * T * T * int64_t(sizeof(float));
      KV_CHECK(bytes <= max_pattern_bytes,
               "run_with_cache: the pattern of {} layers x {} heads x {} x {} tokens needs {} "
               "bytes, over max_pattern_bytes={}; ask for fewer layers or a shorter sequence",
               L, c.n_heads, T, T, bytes, max_pattern_bytes);
      py::array_t<float> a({L, py::ssize_t(c.n_heads), py::ssize_t(T), py::ssize_t(T)});
      std::memset(a.mutable_data(), 0, size_t(a.nbytes()));  // masked (future) keys stay 0
      obs.pattern = a.mutable_data();
      cache[py::str(kNames[size_t(k)])] = a;
      continue;
    }
    const int heads = (k == 0 || k == 4) ? c.n_heads : c.n_kv_heads;
    py::array_t<float> a({L, py::ssize_t(heads), py::ssize_t(T), hd});
    obs.dest[k] = a.mutable_data();
    cache[py::str(kNames[size_t(k)])] = a;
  }
  py::array_t<float> logits({py::ssize_t(T), py::ssize_t(c.vocab_size)});
  float* out = logits.mutable_data();
  const int threads = pm.threads;
  long_call([&] {
    set_threads(threads);
    RunState rs(c, T);
    ForwardOptions fo;
    fo.observer = &obs;
    fo.logits = LogitsMode::kAll;
    const auto lg = forward(m, rs, ids, fo);
    std::memcpy(out, lg.data(), lg.size() * sizeof(float));
  });
  return py::make_tuple(logits, cache);
}

std::string generate_text(const PyModel& pm, const std::string& prompt, int max_tokens,
                          float temperature, float top_p, uint64_t seed) {
  // generate() itself refuses a negative max_tokens, a temperature that is negative or
  // not finite, and a top_p outside (0, 1].
  GenerateOptions o;
  o.prompt = prompt;
  o.max_tokens = max_tokens;
  o.temperature = temperature;
  o.top_p = top_p;
  o.seed = seed;
  const int threads = pm.threads;
  return long_call([&] {
    set_threads(threads);
    return generate(pm.model(), pm.tok(), o).text;
  });
}

py::dict perplexity_of(const PyModel& pm, const std::string& text, int window, int stride,
                       int64_t max_tokens) {
  KV_CHECK(window >= 0 && stride >= 0 && max_tokens >= 0,
           "perplexity: window, stride and max_tokens must be >= 0, got {}, {}, {}", window, stride,
           max_tokens);
  PerplexityOptions o;
  o.window = window;
  o.stride = stride;
  o.max_tokens = max_tokens;
  const int threads = pm.threads;
  const PerplexityResult r = long_call([&] {
    set_threads(threads);
    const std::vector<int32_t> stream = token_stream(pm.tok(), {text});
    return perplexity(pm.model(), pm.tok(), stream, o);
  });
  KV_CHECK(r.tokens_scored > 0, "perplexity: the text gave no token to score ({} windows)",
           r.windows);
  py::dict d;
  d["perplexity"] = r.perplexity();
  d["mean_nll"] = r.mean_nll();
  d["bits_per_byte"] = r.bits_per_byte();
  d["tokens_scored"] = r.tokens_scored;
  d["windows"] = r.windows;
  d["window"] = r.window;
  d["stride"] = r.stride;
  d["seconds"] = r.seconds;
  return d;
}

}  // namespace

void bind_model(py::module_& m) {
  py::class_<PyModel>(m, "Model", "A loaded model and its tokenizer (kvscope.load)")
      .def_property_readonly("config", [](const PyModel& p) { return config_dict(p.model()); })
      .def_property_readonly("name", [](const PyModel& p) { return p.model().name; })
      .def_property_readonly("tokenizer_path",
                             [](const PyModel& p) { return p.lm->tokenizer_path.string(); })
      .def_readwrite("threads", &PyModel::threads)
      .def_property_readonly("bos_id", [](const PyModel& p) { return p.tok().sequence_bos(); })
      .def(
          "tokenize",
          [](const PyModel& p, const std::string& text, std::optional<bool> bos) {
            std::vector<int32_t> ids = p.tok().encode(text);
            const Tokenizer& t = p.tok();
            const int32_t b = !bos ? t.sequence_bos() : *bos ? t.bos_id : -1;
            KV_CHECK(!bos || !*bos || t.bos_id >= 0,
                     "tokenize: bos=True but the tokenizer {} has no BOS token",
                     p.lm->tokenizer_path.string());
            if (b >= 0) ids.insert(ids.begin(), b);
            return ids;
          },
          py::arg("text"), py::arg("bos") = py::none())
      .def(
          "decode",
          [](const PyModel& p, const std::vector<int64_t>& ids) {
            const std::vector<int32_t> v = checked_ids(p.model(), ids, "decode: ids");
            for (size_t i = 0; i < v.size(); ++i)
              KV_CHECK(v[i] < p.tok().vocab_size(),
                       "decode: ids: token {} is id {}, outside the tokenizer's vocabulary [0, {})",
                       i, v[i], p.tok().vocab_size());
            return p.tok().decode(v);
          },
          py::arg("ids"))
      .def("_run_with_cache", &run_with_cache, py::arg("ids"), py::arg("names"), py::arg("layers"),
           py::arg("allow_extrapolation"), py::arg("max_pattern_bytes"))
      .def("_generate", &generate_text, py::arg("prompt"), py::arg("max_tokens"),
           py::arg("temperature"), py::arg("top_p"), py::arg("seed"))
      .def("_perplexity", &perplexity_of, py::arg("text"), py::arg("window"), py::arg("stride"),
           py::arg("max_tokens"));

  m.def(
      "_load",
      [](const std::string& path, const std::string& tokenizer, int threads) {
        KV_CHECK(threads >= 0, "load: threads must be >= 0 (0: all cores), got {}", threads);
        resolve_threads(threads);  // refuses a count over max_threads() by name
        PyModel p;
        p.threads = threads;
        p.lm = long_call([&] {
          return std::make_shared<LoadedModel>(load_model_and_tokenizer(path, tokenizer));
        });
        return p;
      },
      py::arg("path"), py::arg("tokenizer"), py::arg("threads"));
}

}  // namespace kvscope::python
