#include "kvscope/model/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <string_view>

#include "kvscope/io/error.hpp"

namespace kvscope {

namespace fs = std::filesystem;

namespace {

using C = const ModelConfig&;
bool always(C) {
  return true;
}
bool compressed(C c) {
  return c.compressed_keys();
}
bool qkv_bias(C c) {
  return c.qkv_bias;
}
bool o_bias(C c) {
  return c.o_bias;
}
bool mlp_bias(C c) {
  return c.mlp_bias;
}
bool qk_norm(C c) {
  return c.qk_norm;
}
bool sandwich(C c) {
  return c.sandwich_norms;
}
int64_t one(C) {
  return 1;
}
int64_t dim(C c) {
  return c.dim;
}
int64_t hidden(C c) {
  return c.hidden_dim;
}
int64_t q_dim(C c) {
  return c.q_dim();
}
int64_t kv_dim(C c) {
  return c.kv_dim();
}
int64_t k_proj_dim(C c) {
  return c.k_proj_dim();
}
int64_t head_dim(C c) {
  return c.head_dim;
}
int64_t compress_cols(C c) {  // the post-RoPE keys of a cached head's group
  return int64_t(c.k_proj_heads / c.n_kv_heads) * c.head_dim;
}

}  // namespace

const std::array<SlotRow, kLayerSlots>& layer_slots() {
  using L = LayerWeights;
  // clang-format off
  static const std::array<SlotRow, kLayerSlots> rows = {{
    // slot                name              member              HF name (after model.layers.N.)     GGUF (after blk.N.)          matrix present    rows        cols
    {Slot::kAttnNorm,     "attn_norm",      &L::attn_norm,      "input_layernorm.weight",            "attn_norm.weight",           false, always,     one,        dim},
    {Slot::kWq,           "wq",             &L::wq,             "self_attn.q_proj.weight",           "attn_q.weight",              true,  always,     q_dim,      dim},
    {Slot::kWk,           "wk",             &L::wk,             "self_attn.k_proj.weight",           "attn_k.weight",              true,  always,     k_proj_dim, dim},
    {Slot::kWv,           "wv",             &L::wv,             "self_attn.v_proj.weight",           "attn_v.weight",              true,  always,     kv_dim,     dim},
    {Slot::kWo,           "wo",             &L::wo,             "self_attn.o_proj.weight",           "attn_output.weight",         true,  always,     dim,        q_dim},
    {Slot::kFfnNorm,      "ffn_norm",       &L::ffn_norm,       "post_attention_layernorm.weight",   "ffn_norm.weight",            false, always,     one,        dim},
    {Slot::kGate,         "w_gate",         &L::w_gate,         "mlp.gate_proj.weight",              "ffn_gate.weight",            true,  always,     hidden,     dim},
    {Slot::kUp,           "w_up",           &L::w_up,           "mlp.up_proj.weight",                "ffn_up.weight",              true,  always,     hidden,     dim},
    {Slot::kDown,         "w_down",         &L::w_down,         "mlp.down_proj.weight",              "ffn_down.weight",            true,  always,     dim,        hidden},
    {Slot::kBq,           "bq",             &L::bq,             "self_attn.q_proj.bias",             "attn_q.bias",                false, qkv_bias,   one,        q_dim},
    {Slot::kBk,           "bk",             &L::bk,             "self_attn.k_proj.bias",             "attn_k.bias",                false, qkv_bias,   one,        k_proj_dim},
    {Slot::kBv,           "bv",             &L::bv,             "self_attn.v_proj.bias",             "attn_v.bias",                false, qkv_bias,   one,        kv_dim},
    {Slot::kBo,           "bo",             &L::bo,             "self_attn.o_proj.bias",             nullptr,                      false, o_bias,     one,        dim},
    {Slot::kQNorm,        "q_norm",         &L::q_norm,         "self_attn.q_norm.weight",           "attn_q_norm.weight",         false, qk_norm,    one,        head_dim},
    {Slot::kKNorm,        "k_norm",         &L::k_norm,         "self_attn.k_norm.weight",           "attn_k_norm.weight",         false, qk_norm,    one,        head_dim},
    {Slot::kPostAttnNorm, "post_attn_norm", &L::post_attn_norm, "post_attention_layernorm.weight",   "post_attention_norm.weight", false, sandwich,   one,        dim},
    {Slot::kPostFfnNorm,  "post_ffn_norm",  &L::post_ffn_norm,  "post_feedforward_layernorm.weight", "post_ffw_norm.weight",       false, sandwich,   one,        dim},
    {Slot::kBGate,        "b_gate",         &L::b_gate,         "mlp.gate_proj.bias",                nullptr,                      false, mlp_bias,   one,        hidden},
    {Slot::kBUp,          "b_up",           &L::b_up,           "mlp.up_proj.bias",                  nullptr,                      false, mlp_bias,   one,        hidden},
    {Slot::kBDown,        "b_down",         &L::b_down,         "mlp.down_proj.bias",                nullptr,                      false, mlp_bias,   one,        dim},
    {Slot::kKCompress,    "k_compress",     &L::k_compress,     nullptr,                             nullptr,                      false, compressed, kv_dim,     compress_cols},
    {Slot::kQProject,     "q_project",      &L::q_project,      nullptr,                             nullptr,                      false, compressed, q_dim,      head_dim},
  }};
  // clang-format on
  return rows;
}

const char* hf_layer_name(Slot s, const ModelConfig& c) {
  // Gemma's sandwich: the MLP's input norm is pre_feedforward_layernorm, and
  // post_attention_layernorm is the norm on the attention output (its own slot).
  if (s == Slot::kFfnNorm && c.sandwich_norms) return "pre_feedforward_layernorm.weight";
  return layer_slots()[size_t(s)].hf;
}

bool fused_slot(Slot s, const ModelConfig& c) {
  if (!traits(c.family).fused) return false;
  switch (s) {
    case Slot::kWq:
    case Slot::kWk:
    case Slot::kWv:
    case Slot::kGate:
    case Slot::kUp:
      return true;
    default:
      return false;
  }
}

std::vector<TensorSlot> tensor_slots(Model& m) {
  const ModelConfig& c = m.config;
  Weights& w = m.weights;
  std::vector<TensorSlot> s;
  s.push_back({&w.tok_embedding, c.vocab_size, c.dim});
  for (auto& l : w.layers)
    for (const SlotRow& r : layer_slots())
      if (r.present(c)) s.push_back({&(l.*r.member), r.rows(c), r.cols(c)});
  s.push_back({&w.final_norm, 1, c.dim});
  s.push_back({&w.classifier, c.vocab_size, c.dim});
  return s;
}

void check_shapes(Model& m) {
  KV_CHECK(int(m.weights.layers.size()) == m.config.n_layers,
           "{}: expected {} layers of weights, found {}", m.source.string(), m.config.n_layers,
           m.weights.layers.size());
  for (const TensorSlot& s : tensor_slots(m)) {
    KV_CHECK(!s.tensor->empty(), "{}: tensor '{}' is missing", m.source.string(), s.tensor->name);
    // A vector may be stored as [n] or [1, n]; both arrive here as rows=1.
    KV_CHECK(s.tensor->rows == s.rows && s.tensor->cols == s.cols,
             "{}: tensor '{}' has shape [{}, {}], expected [{}, {}]", m.source.string(),
             s.tensor->name, s.tensor->rows, s.tensor->cols, s.rows, s.cols);
  }
  check_finite(m);
}

namespace {

// Index of the first element of `t` whose exponent bits are all ones (Inf or NaN), or -1.
// Bit tests on the stored type: no widening, any alignment. Chunks in parallel, the lowest
// bad index wins so the message is the same for any thread count.
int64_t first_non_finite(const Tensor& t) {
  const int64_t n = t.numel();
  if (dtype_quantized(t.dtype)) {  // scales are halves: dequantize each row and look
    int64_t first = n;
#pragma omp parallel
    {
      std::vector<float> row(static_cast<size_t>(t.cols));
#pragma omp for schedule(static) reduction(min : first)
      for (int64_t r = 0; r < t.rows; ++r) {
        t.rows_to_f32(r, 1, row.data());
        for (int64_t c = 0; c < t.cols; ++c)
          if (!std::isfinite(row[size_t(c)])) {
            first = std::min(first, r * t.cols + c);
            break;
          }
      }
    }
    return first < n ? first : -1;
  }
  const size_t es = dtype_size(t.dtype);
  constexpr int64_t kChunk = int64_t(1) << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  int64_t first = n;
#pragma omp parallel for schedule(static) reduction(min : first)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t e = std::min(n, (ch + 1) * kChunk);
    for (int64_t i = ch * kChunk; i < e; ++i) {
      const std::byte* p = t.data + size_t(i) * es;
      bool bad;
      if (t.dtype == DType::F32) {
        uint32_t u;
        std::memcpy(&u, p, 4);
        bad = (u & 0x7f800000u) == 0x7f800000u;
      } else {
        uint16_t h;
        std::memcpy(&h, p, 2);
        bad = t.dtype == DType::F16 ? (h & 0x7c00u) == 0x7c00u : (h & 0x7f80u) == 0x7f80u;
      }
      if (bad) {
        first = std::min(first, i);
        break;
      }
    }
  }
  return first < n ? first : -1;
}

}  // namespace

void check_finite(Model& m) {
  std::set<const std::byte*> seen;  // a tied classifier shares the embedding's data
  for (const TensorSlot& s : tensor_slots(m)) {
    const Tensor& t = *s.tensor;
    if (t.empty() || !seen.insert(t.data).second) continue;
    const int64_t i = first_non_finite(t);
    // The scan faulted the tensor's mapped pages in; hand them back so that loading a 7B
    // checkpoint still holds one layer at a time, not the whole file (README, Performance).
    t.release_pages();
    if (i < 0) continue;
    // i indexes the stored bytes (a row-reordered tensor's stored row i / cols).
    float v = 0;
    if (dtype_quantized(t.dtype)) {
      std::vector<float> row(static_cast<size_t>(t.cols));
      t.rows_to_f32(i / t.cols, 1, row.data());
      v = row[size_t(i % t.cols)];
    } else {
      widen_to_f32(t.dtype, t.data + size_t(i) * dtype_size(t.dtype), 1, &v);
    }
    throw Error(
        fmt::format("{}: tensor '{}' holds {} at [{}, {}] (expected finite weights; a "
                    "corrupt or diverged checkpoint?)",
                    m.source.string(), t.name, std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"),
                    i / t.cols, i % t.cols));
  }
}

void split_fused_qkv(const Tensor& qkv, const ModelConfig& c, const std::string& where,
                     LayerWeights& lw) {
  const int64_t nq = c.q_dim(), nk = c.kv_dim();
  KV_CHECK(qkv.rows == nq + 2 * nk, "{}: tensor '{}' has {} rows, expected {} (q {} + k {} + v {})",
           where, qkv.name, qkv.rows, nq + 2 * nk, nq, nk, nk);
  lw.wq = row_view(qkv, 0, nq, "q rows");
  lw.wk = row_view(qkv, nq, nk, "k rows");
  lw.wv = row_view(qkv, nq + nk, nk, "v rows");
}

void split_fused_gate_up(const Tensor& gu, const ModelConfig& c, const std::string& where,
                         LayerWeights& lw) {
  KV_CHECK(gu.rows == 2 * int64_t(c.hidden_dim),
           "{}: tensor '{}' has {} rows, expected {} (gate and up, 2 x {})", where, gu.name,
           gu.rows, 2 * c.hidden_dim, c.hidden_dim);
  lw.w_gate = row_view(gu, 0, c.hidden_dim, "gate rows");
  lw.w_up = row_view(gu, c.hidden_dim, c.hidden_dim, "up rows");
}

bool any_quantized(const std::map<std::string, int64_t>& stored_dtypes) {
  for (const auto& [name, n] : stored_dtypes)
    if (name != "F32" && name != "F16" && name != "BF16") return true;
  return false;
}

void widen_all(Model& m) {
  const bool tied =
      m.config.tied_embeddings && m.weights.classifier.data == m.weights.tok_embedding.data;
  for (const TensorSlot& s : tensor_slots(m)) {
    Tensor& t = *s.tensor;
    if (t.f32() != nullptr) continue;
    if (tied && &t == &m.weights.classifier) continue;  // shares the embedding below
    t = make_tensor(t.name, t.rows, t.cols, t.to_f32());
  }
  if (tied) m.weights.classifier = m.weights.tok_embedding;
}

namespace {

// GGUF files start with the magic "GGUF", whatever their name.
bool is_gguf(const fs::path& path) {
  if (!fs::is_regular_file(path)) return false;
  char magic[4] = {};
  std::ifstream in(path, std::ios::binary);
  in.read(magic, 4);
  return in.gcount() == 4 && std::string_view(magic, 4) == "GGUF";
}

}  // namespace

Model load_model(const fs::path& path, const LoadOptions& opt) {
  KV_CHECK_FOUND(fs::exists(path), "{}: model path does not exist", path.string());
  Model m;
  const std::string ext = path.extension().string();
  // A .gguf name with the wrong magic is a broken GGUF file, not a llama2.c checkpoint:
  // the GGUF reader says what the magic is.
  if (is_gguf(path) || (ext == ".gguf" && !fs::is_directory(path))) {
    m = load_gguf(path);
  } else if (fs::is_directory(path)) {
    m = load_hf_llama(path);
  } else if (path.filename() == "config.json" || ext == ".safetensors" ||
             path.filename() == "model.safetensors.index.json") {
    m = load_hf_llama(path.parent_path());
  } else {
    m = load_llama2c(path);
  }
  {
    std::set<const std::byte*> seen;  // a tied classifier is the embedding's bytes
    for (const TensorSlot& s : tensor_slots(m))
      if (seen.insert(s.tensor->data).second)
        ++m.stored_dtypes[std::string(dtype_name(s.tensor->dtype))];
  }
  if (m.format != "llama2c") {
    size_t widened = 0;
    for (const TensorSlot& s : tensor_slots(m)) widened += size_t(s.tensor->numel()) * 4;
    if (widened <= opt.widen_at_load_limit) widen_all(m);
  }
  return m;
}

fs::path find_tokenizer_for(const fs::path& model_path) {
  if (is_gguf(model_path)) return model_path;  // its metadata holds the tokenizer
  fs::path dir = fs::is_directory(model_path) ? model_path : model_path.parent_path();
  if (dir.empty()) dir = ".";
  if (fs::exists(dir / "tokenizer.json")) return dir / "tokenizer.json";
  std::vector<fs::path> found;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path() == model_path) continue;
    const std::string fname = e.path().filename().string();
    if (e.path().extension() == ".model" ||
        (fname.rfind("tok", 0) == 0 && e.path().extension() == ".bin"))
      found.push_back(e.path());
  }
  std::sort(found.begin(), found.end());
  KV_CHECK(found.size() == 1,
           "{}: expected exactly one tokenizer (tokenizer.json, *.model or tok*.bin) beside the "
           "model, found {}; name it explicitly",
           dir.string(), found.size());
  return found[0];
}

int64_t parameter_count(const Model& m) {
  int64_t n = 0;
  for (const TensorSlot& s : tensor_slots(const_cast<Model&>(m))) n += s.rows * s.cols;
  if (m.config.tied_embeddings) n -= int64_t(m.config.vocab_size) * m.config.dim;
  return n;
}

}  // namespace kvscope
