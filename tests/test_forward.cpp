// The fast forward pass against the naive double-precision reference
// (tests/reference_model.cpp): logits, Q, K before/after RoPE, V and attention weights,
// for prefill and for incremental decoding, on every shipped model and on synthetic
// checkpoints that exercise what the shipped ones do not (F16/BF16, shards, MHA,
// head_dim != dim/n_heads, untied classifier, ALiBi and no positions).
#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <filesystem>
#include <mutex>
#include <random>

#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "reference_model.hpp"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;
constexpr double kTol = 1e-4;  // relative L2 error allowed against the reference

std::vector<int32_t> random_tokens(const ModelConfig& c, int T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(3, c.vocab_size - 1);
  std::vector<int32_t> t{c.bos_id};
  while (int(t.size()) < T) t.push_back(d(rng));
  return t;
}

// Stores every capture the forward pass emits, per layer, in [heads, T, hd] order.
struct Recorder : ForwardObserver {
  int T;
  bool attention;
  std::vector<std::vector<float>> q, kpre, k, v, attn;  // per layer
  std::mutex mu;
  Recorder(const ModelConfig& c, int T_, bool att) : T(T_), attention(att) {
    for (auto* a : {&q, &kpre, &k, &v}) a->resize(size_t(c.n_layers));
    attn.assign(size_t(c.n_layers), std::vector<float>(size_t(c.n_heads) * T * T, 0.f));
  }
  bool wants_attention() const override { return attention; }
  void on_layer(const LayerCapture& cap) override {
    auto copy = [&](std::vector<float>& dst, const float* src, int heads) {
      dst.assign(src, src + size_t(heads) * cap.n_tokens * cap.head_dim);
    };
    copy(q[size_t(cap.layer)], cap.q, cap.n_heads);
    copy(kpre[size_t(cap.layer)], cap.k_pre_rope, cap.n_kv_heads);
    copy(k[size_t(cap.layer)], cap.k, cap.n_kv_heads);
    copy(v[size_t(cap.layer)], cap.v, cap.n_kv_heads);
  }
  void on_attention(const AttentionRows& r) override {
    std::lock_guard<std::mutex> lock(mu);
    for (int i = 0; i < r.n_q; ++i)
      for (int j = 0; j < r.n_keys; ++j)
        attn[size_t(r.layer)][(size_t(r.head) * T + r.q_begin + i) * T + j] =
            r.weights[size_t(i) * r.n_keys + j];
  }
};

// Prefill over the whole sequence: every captured tensor and the logits. block_bytes:
// ForwardOptions::widen_block_bytes (small: stored matrices widened a few rows at a time).
void check_prefill(const Model& m, const std::vector<int32_t>& tokens, bool attention,
                   size_t block_bytes = ForwardOptions{}.widen_block_bytes) {
  const int T = int(tokens.size());
  const test::ReferenceRun ref = test::reference_forward(m, tokens);
  RunState st(m.config, T);
  Recorder rec(m.config, T, attention);
  ForwardOptions opt;
  opt.observer = &rec;
  opt.query_block = 16;  // several blocks per head
  opt.widen_block_bytes = block_bytes;
  auto logits = forward(m, st, tokens, opt);
  INFO("model " << m.name << ", widened in blocks of " << block_bytes << " bytes");
  CHECK(test::rel_error(logits.data(), ref.logits.data(), ref.logits.size()) < kTol);
  for (int l = 0; l < m.config.n_layers; ++l) {
    INFO("layer " << l);
    const size_t L = size_t(l);
    CHECK(test::rel_error(rec.q[L].data(), ref.q[L].data(), ref.q[L].size()) < kTol);
    CHECK(test::rel_error(rec.kpre[L].data(), ref.k_pre[L].data(), ref.k_pre[L].size()) < kTol);
    CHECK(test::rel_error(rec.k[L].data(), ref.k[L].data(), ref.k[L].size()) < kTol);
    CHECK(test::rel_error(rec.v[L].data(), ref.v[L].data(), ref.v[L].size()) < kTol);
    if (attention)
      CHECK(test::rel_error(rec.attn[L].data(), ref.attn[L].data(), ref.attn[L].size()) < kTol);
  }
}

// Token-by-token and chunked decoding must give the reference logits of each position.
void check_incremental(const Model& m, const std::vector<int32_t>& tokens,
                       size_t block_bytes = ForwardOptions{}.widen_block_bytes) {
  const int T = int(tokens.size());
  const test::ReferenceRun ref = test::reference_forward(m, tokens);
  const int V = m.config.vocab_size;
  RunState st(m.config, T);
  int t = 0;
  const int chunks[] = {1, 1, 1, 7, 1, 13};  // single decode steps and short prefills
  for (int i = 0; t < T; ++i) {
    const int n = std::min(chunks[i % 6], T - t);
    ForwardOptions opt;
    opt.widen_block_bytes = block_bytes;
    auto logits =
        forward(m, st, std::span<const int32_t>(tokens).subspan(size_t(t), size_t(n)), opt);
    INFO("model " << m.name << " positions " << t << ".." << t + n - 1 << ", blocks of "
                  << block_bytes << " bytes");
    CHECK(test::rel_error(logits.data(), ref.logits.data() + size_t(t) * V, size_t(n) * V) < kTol);
    t += n;
  }
  CHECK(st.pos == T);
  CHECK(st.cache.length() == T);
}

}  // namespace

TEST_CASE("forward pass matches the naive reference on the shipped models", "[model][forward]") {
  const char* paths[] = {"models/stories260K/stories260K.bin", "models/tinystories656K",
                         "models/babyllama105/model5000.bin"};
  for (const char* p : paths) {
    const Model m = load_model(kData + "/" + p);
    check_prefill(m, random_tokens(m.config, 80, 7), /*attention=*/true);
    check_incremental(m, random_tokens(m.config, 40, 11));
  }
}

TEST_CASE("forward pass matches the reference on synthetic checkpoints", "[model][forward]") {
  struct Case {
    const char* what;
    DType dtype;
    int shards, dim, heads, kv_heads, head_dim;
    PositionalKind pos;
    bool tied;
  };
  const Case cases[] = {
      {"bf16 sharded GQA-4 untied", DType::BF16, 3, 64, 8, 2, 8, PositionalKind::kRope, false},
      {"f16 MHA head_dim != dim/heads", DType::F16, 1, 48, 4, 4, 16, PositionalKind::kRope, true},
      {"f32 ALiBi, 6 heads (not a power of two)", DType::F32, 1, 48, 6, 3, 8,
       PositionalKind::kAlibi, false},
      {"f32 no positions", DType::F32, 2, 32, 4, 2, 8, PositionalKind::kNone, true},
  };
  for (const Case& cs : cases) {
    INFO(cs.what);
    SyntheticSpec spec;
    ModelConfig& c = spec.config;
    c.dim = cs.dim;
    c.hidden_dim = 3 * cs.dim;
    c.n_layers = 2;
    c.n_heads = cs.heads;
    c.n_kv_heads = cs.kv_heads;
    c.head_dim = cs.head_dim;
    c.vocab_size = 97;
    c.max_seq_len = 64;
    c.rope_theta = 500000.0f;
    c.norm_eps = 1e-5f;
    c.positional = cs.pos;
    c.tied_embeddings = cs.tied;
    spec.dtype = cs.dtype;
    spec.n_shards = cs.shards;
    const fs::path dir =
        fs::temp_directory_path() / fmt::format("kvscope_synth_{}", int(&cs - cases));
    fs::remove_all(dir);
    write_synthetic_hf_model(dir, spec);
    LoadOptions keep_mapped;
    keep_mapped.widen_at_load_limit = 0;  // exercise per-layer widening of mapped tensors
    const Model m = load_model(dir, keep_mapped);
    CHECK(m.config.positional == cs.pos);
    CHECK(m.weights.layers[0].wq.dtype == cs.dtype);
    check_prefill(m, random_tokens(m.config, 50, 3), /*attention=*/true);
    check_incremental(m, random_tokens(m.config, 30, 5));
    // Stored matrices widened inside their products a block of rows at a time, as a 7B
    // checkpoint's are (3000 bytes: 11 rows of 64 floats on one thread, 5 on each of two,
    // 3 or 1 of W_down's 192; short last blocks; the classifier too): the same logits and
    // captures, in prefill (threaded products) and decoding (one-row products).
    if (cs.dtype != DType::F32) {
      check_prefill(m, random_tokens(m.config, 50, 3), /*attention=*/false, 3000);
      check_incremental(m, random_tokens(m.config, 30, 5), 3000);
      // Against the whole-widened products: each output element is the same dot product,
      // summed by other OpenBLAS calls, so the logits agree to float rounding (1e-6
      // relative L2; measured ~2e-7), far below the reference tolerance.
      const std::vector<int32_t> toks = random_tokens(m.config, 50, 3);
      std::vector<float> whole, blocks;
      for (size_t bytes : {ForwardOptions{}.widen_block_bytes, size_t(3000)}) {
        RunState st(m.config, 50);
        ForwardOptions opt;
        opt.widen_block_bytes = bytes;
        const auto lg = forward(m, st, toks, opt);
        (bytes == 3000 ? blocks : whole).assign(lg.begin(), lg.end());
      }
      const std::vector<double> wd(whole.begin(), whole.end());
      CHECK(test::rel_error(blocks.data(), wd.data(), wd.size()) < 1e-6);
    }
    fs::remove_all(dir);
  }
}
