// llama2.c checkpoints (the legacy "version 0" export of karpathy/llama2.c):
//   int32 header[7] = dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//   (vocab_size < 0 means the classifier is stored separately at the end), then float32:
//   tok_embedding [vocab, dim], rms_att [L, dim], wq [L, q_dim, dim], wk [L, kv_dim, dim],
//   wv [L, kv_dim, dim], wo [L, dim, q_dim], rms_ffn [L, dim], w1 [L, hidden, dim],
//   w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
//   freq_cis_real/imag [seq_len, head_dim/2] each (unused: RoPE is recomputed),
//   wcls [vocab, dim] when not shared. RoPE rotates adjacent pairs.
#include <cstring>

#include "kvscope/io/checked.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/mapped_file.hpp"
#include "kvscope/model/model.hpp"

namespace kvscope {

namespace fs = std::filesystem;

Model load_llama2c(const fs::path& file) {
  auto mf = MappedFile::open(file);
  const std::string src = file.string();
  KV_CHECK(mf->size() >= 28, "{}: llama2.c checkpoint too short for its 28-byte header ({} bytes)",
           src, mf->size());
  int32_t h[7];
  std::memcpy(h, mf->data(), sizeof h);
  // Newer llama2.c exports (v1/v2) start with the magic "ak42".
  KV_CHECK(uint32_t(h[0]) != 0x616b3432u,
           "{}: llama2.c export version 1/2 (magic 'ak42') is not supported; export with "
           "--version 0 (legacy float32)",
           src);
  const char* names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                          "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) {
    KV_CHECK(i == 5 ? h[i] != 0 : h[i] > 0, "{}: header field {} = {} is not valid", src, names[i],
             h[i]);
    KV_CHECK(std::abs(int64_t(h[i])) < (int64_t(1) << 24),
             "{}: header field {} = {} is implausibly large (limit {})", src, names[i], h[i],
             (int64_t(1) << 24) - 1);
  }
  Model m;
  m.name = file.parent_path().filename().string();
  if (m.name.empty()) m.name = file.stem().string();
  m.format = "llama2c";
  m.source = file;
  m.files = {file};
  ModelConfig& c = m.config;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = std::abs(h[5]);
  c.max_seq_len = h[6];
  c.tied_embeddings = h[5] > 0;
  KV_CHECK(c.dim % c.n_heads == 0, "{}: dim {} is not a multiple of n_heads {}", src, c.dim,
           c.n_heads);
  c.head_dim = c.dim / c.n_heads;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_layout = RopeLayout::kAdjacentPairs;
  c.positional = PositionalKind::kRope;
  validate(c, src);

  // The size the header implies, in checked arithmetic (a lying header can make the sum
  // wrap around 2^64 onto the real size), compared with the file before anything is
  // allocated per layer.
  const int64_t L = c.n_layers, D = c.dim, H = c.hidden_dim, V = c.vocab_size;
  const int64_t Q = c.q_dim(), KV = c.kv_dim();
  ByteCount need(28);
  need.add(V, D, 4);
  need.add(L, D, 4).add(L, Q, D, 4).add(L, KV, D, 4).add(L, KV, D, 4).add(L, D, Q, 4);
  need.add(L, D, 4).add(L, H, D, 4).add(L, D, H, 4).add(L, H, D, 4);
  need.add(D, 4).add(c.max_seq_len, c.head_dim / 2, 2, 4);
  if (!c.tied_embeddings) need.add(V, D, 4);
  KV_CHECK(need.ok() && need.value() == mf->size(),
           "{}: file size {} bytes does not match the header (dim {}, hidden {}, layers {}, heads "
           "{}, kv heads {}, vocab {}, seq {}), which needs {} bytes{}",
           src, mf->size(), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, h[5],
           c.max_seq_len, need.ok() ? fmt::format("{}", need.value()) : "more than 2^64",
           !need.ok() || need.value() > mf->size() ? " (truncated?)" : "");

  // Lay out every tensor (the sizes are now known to fit the file).
  size_t offset = 28;
  auto take = [&](const std::string& name, int64_t rows, int64_t cols) {
    Tensor t;
    t.name = name;
    t.dtype = DType::F32;
    t.rows = rows;
    t.cols = cols;
    t.data = mf->data() + offset;  // checked against the file size below
    t.owner = mf;
    t.file = mf;
    offset += size_t(rows * cols) * 4;
    return t;
  };
  Weights& w = m.weights;
  w.layers.resize(size_t(L));
  w.tok_embedding = take("token_embedding_table", V, D);
  // Per-layer tensors are stored stacked over layers, one kind after another.
  auto stacked = [&](Tensor LayerWeights::*field, const char* name, int64_t rows, int64_t cols) {
    for (int64_t l = 0; l < L; ++l)
      w.layers[size_t(l)].*field = take(fmt::format("{}[{}]", name, l), rows, cols);
  };
  stacked(&LayerWeights::attn_norm, "rms_att_weight", 1, D);
  stacked(&LayerWeights::wq, "wq", Q, D);
  stacked(&LayerWeights::wk, "wk", KV, D);
  stacked(&LayerWeights::wv, "wv", KV, D);
  stacked(&LayerWeights::wo, "wo", D, Q);
  stacked(&LayerWeights::ffn_norm, "rms_ffn_weight", 1, D);
  stacked(&LayerWeights::w_gate, "w1", H, D);
  stacked(&LayerWeights::w_down, "w2", D, H);
  stacked(&LayerWeights::w_up, "w3", H, D);
  w.final_norm = take("rms_final_weight", 1, D);
  offset += size_t(c.max_seq_len) * size_t(c.head_dim / 2) * 2 * 4;  // freq_cis_real/imag
  if (c.tied_embeddings) {
    w.classifier = w.tok_embedding;
  } else {
    w.classifier = take("wcls", V, D);
  }
  KV_ASSERT(offset == mf->size());
  check_shapes(m);
  return m;
}

}  // namespace kvscope
