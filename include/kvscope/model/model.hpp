// A loaded model: blueprint (ModelConfig) + read-only weights. Run state (activations,
// KV cache) lives apart, in forward.hpp, so one Model serves many runs.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "kvscope/model/model_config.hpp"
#include "kvscope/model/tensor.hpp"

namespace kvscope {

struct LayerWeights {
  Tensor attn_norm;  // [1, dim]
  Tensor wq;         // [n_heads*head_dim, dim]
  Tensor wk;         // [n_kv_heads*head_dim, dim]
  Tensor wv;         // [n_kv_heads*head_dim, dim]
  Tensor wo;         // [dim, n_heads*head_dim]
  Tensor ffn_norm;   // [1, dim]
  Tensor w_gate;     // [hidden_dim, dim]  (llama2.c w1)
  Tensor w_up;       // [hidden_dim, dim]  (llama2.c w3)
  Tensor w_down;     // [dim, hidden_dim]  (llama2.c w2)
  // Biases [1, rows of their matrix], only where the config has them (qkv_bias, o_bias,
  // mlp_bias): bq [1, n_heads*head_dim], bk [1, n_kv_heads*head_dim], bv likewise,
  // bo [1, dim], b_gate and b_up [1, hidden_dim], b_down [1, dim].
  Tensor bq, bk, bv, bo, b_gate, b_up, b_down;
  Tensor q_norm, k_norm;  // [1, head_dim], only with config.qk_norm
  // Gemma's sandwich norms (config.sandwich_norms): on the attention block's output and on
  // the MLP's output, before each joins the residual stream. [1, dim] each.
  Tensor post_attn_norm, post_ffn_norm;
  // Only in models with config.k_proj_heads > 0 (see ModelConfig):
  Tensor k_compress;  // [n_kv_heads*head_dim, group*head_dim]: rows of cached head j map
                      // the post-RoPE keys of its group's heads to it (group = k_proj_heads
                      // / n_kv_heads)
  Tensor q_project;   // [n_heads*head_dim, head_dim]: rows of query head h map its
                      // post-RoPE query into its cached head's basis
};

struct Weights {
  Tensor tok_embedding;  // [vocab, dim]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [1, dim]
  Tensor classifier;  // [vocab, dim]; the same bytes as tok_embedding when tied
};

// Whether a count of tensors per stored dtype name (Model::stored_dtypes) holds a block
// format (anything but F32, F16, BF16).
bool any_quantized(const std::map<std::string, int64_t>& stored_dtypes);

struct Model {
  std::string name;                          // e.g. "stories260K"
  std::string format;                        // "llama2c", "hf-safetensors", "memory"
  std::filesystem::path source;              // file or directory it was loaded from
  std::vector<std::filesystem::path> files;  // every file read (for checksums)
  ModelConfig config;
  Weights weights;
  // How many tensors the files stored in each dtype ("Q4_K": 193, "F32": 65, ...), counted
  // at load, before any widening: what a manifest or dump says the weights were.
  std::map<std::string, int64_t> stored_dtypes;
  bool quantized() const { return any_quantized(stored_dtypes); }
};

// The tensors of a layer as a table, one row each (model.cpp): where it sits in
// LayerWeights, whether it is one of the big matrices, when a model has it and its shape
// under a config. tensor_slots, the shape check and the forward pass's list of a layer's
// tensors walk it.
enum class Slot {
  kAttnNorm,
  kWq,
  kWk,
  kWv,
  kWo,
  kFfnNorm,
  kGate,
  kUp,
  kDown,  // every model
  kBq,
  kBk,
  kBv,
  kBo,  // qkv_bias, o_bias
  kQNorm,
  kKNorm,  // qk_norm
  kPostAttnNorm,
  kPostFfnNorm,  // sandwich_norms
  kBGate,
  kBUp,
  kBDown,  // mlp_bias
  kKCompress,
  kQProject,  // config.compressed_keys()
  kCount
};
inline constexpr int kLayerSlots = int(Slot::kCount);
struct SlotRow {
  Slot slot;
  const char* name;  // for messages: "wq", "post_attn_norm", ...
  Tensor LayerWeights::*member;
  const char* hf;    // name after "model.layers.N." in a Hugging Face checkpoint (LLaMA's
                     // naming; hf_layer_name() applies the families' exceptions)
  const char* gguf;  // name after "blk.N." in a GGUF file; null: GGUF files never hold it
  bool matrix;       // a big matrix (the products may stream it)
  bool (*present)(const ModelConfig&);  // whether a model of this config has it
  int64_t (*rows)(const ModelConfig&);  // its shape [rows, cols]
  int64_t (*cols)(const ModelConfig&);
};
// Indexed by Slot.
const std::array<SlotRow, kLayerSlots>& layer_slots();
// A slot's Hugging Face name for `c`'s family: Gemma's MLP input norm is
// pre_feedforward_layernorm (its post_attention_layernorm is the norm on the attention
// output); null for the slots a checkpoint never stores (a reduced model's).
const char* hf_layer_name(Slot s, const ModelConfig& c);
// Whether a family stores the slot fused with others (Phi-3's qkv_proj and gate_up_proj
// hold W_Q, W_K, W_V and gate, up): the loaders split those rows instead.
bool fused_slot(Slot s, const ModelConfig& c);

// Every tensor of a model once, with its expected shape: the embedding, each layer's
// present slots (in the order of layer_slots()), the final norm and the classifier.
struct TensorSlot {
  Tensor* tensor;
  int64_t rows, cols;
};
std::vector<TensorSlot> tensor_slots(Model& m);

// Throws Error naming the tensor with expected and actual shapes.
void check_shapes(Model& m);
// Throws naming the first tensor (in tensor_slots order) holding a NaN or Inf, with its
// [row, col]: such a weight would put NaN into every table and dump downstream. Called by
// check_shapes.
void check_finite(Model& m);

struct LoadOptions {
  // Widen non-f32 weights to owned f32 at load when the widened model fits in this
  // many bytes; bigger models stay mapped and are widened per layer when used.
  size_t widen_at_load_limit = size_t(2) << 30;
};

// A llama2.c checkpoint file, a GGUF file, a Hugging Face model directory, or a
// config.json / *.safetensors / *.index.json inside one.
Model load_model(const std::filesystem::path& path, const LoadOptions& opt = {});
Model load_llama2c(const std::filesystem::path& file);
Model load_hf_llama(const std::filesystem::path& dir);
// A GGUF file (loader_gguf.cpp): architectures llama, qwen2, qwen3, gemma2, gemma3, phi3.
Model load_gguf(const std::filesystem::path& file);

// Phi-3's fused projections as row views (no copy): qkv rows [Q; K; V] into wq, wk, wv;
// gate_up rows [gate; up] into w_gate, w_up. A fused tensor of the wrong height is refused
// naming it and `where`.
void split_fused_qkv(const Tensor& qkv, const ModelConfig& c, const std::string& where,
                     LayerWeights& lw);
void split_fused_gate_up(const Tensor& gate_up, const ModelConfig& c, const std::string& where,
                         LayerWeights& lw);

// Replaces every non-f32 (or unaligned) tensor by an owned f32 copy.
void widen_all(Model& m);

// The tokenizer that belongs with a model: tokenizer.json in a Hugging Face directory;
// beside a llama2.c file, the one *.model or tok*.bin. Throws when none or several.
std::filesystem::path find_tokenizer_for(const std::filesystem::path& model_path);

// Total parameters (tied classifier counted once).
int64_t parameter_count(const Model& m);

}  // namespace kvscope
