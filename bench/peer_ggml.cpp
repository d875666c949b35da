// ggml's own products on a GGUF file's matrices: for every 2-D weight of the decoding step
// (blk.N.* and output.weight; token_embd is a lookup), the time of y = W x for one token
// (a mat-vec, what decoding does) and for T tokens (a mat-mul, what prefill does), with
// ggml's CPU backend at the threads given. The mat-vecs run as a decoding step does: one
// graph holding every matrix's product once, in file order (one thread pool, a barrier
// between products, as llama.cpp's decode graph), the best of three runs after a warm-up,
// so each matrix comes from memory (timing one matrix several times in a row would read it
// from a last-level cache that holds a 7B model's smaller matrices). A run is one decoding
// step's matrix time, the ceiling bench/peer_ggml.sh sets kvscope's decode against.
// Built by bench/peer_ggml.sh against a ggml checkout the user passes (nothing from ggml
// is committed); not part of the kvscope build.
//   peer_ggml MODEL.gguf THREADS TOKENS
#include <ggml-cpu.h>
#include <ggml.h>
#include <gguf.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// y = W x with x [cols, T] as a ggml graph in a context of its own, sized to hold x, y and
// the work buffer ggml quantizes x into.
struct MulMat {
  ggml_context* ctx = nullptr;
  ggml_cgraph* gf = nullptr;
};

MulMat make_mul_mat(ggml_tensor* w, int T) {
  const size_t data = size_t(w->ne[0] + w->ne[1]) * size_t(T) * sizeof(float) * 2;
  ggml_init_params p = {
      data + ggml_graph_overhead() + 8 * ggml_tensor_overhead() + (size_t(8) << 20), nullptr,
      false};
  MulMat m;
  m.ctx = ggml_init(p);
  ggml_tensor* x = ggml_new_tensor_2d(m.ctx, GGML_TYPE_F32, w->ne[0], T);
  float* xd = static_cast<float*>(x->data);
  for (int64_t i = 0; i < w->ne[0] * T; ++i) xd[i] = float((i * 7919) % 2001) / 1000.0f - 1.0f;
  ggml_tensor* y = ggml_mul_mat(m.ctx, w, x);
  m.gf = ggml_new_graph(m.ctx);
  ggml_build_forward_expand(m.gf, y);
  return m;
}

double run(MulMat& m, int threads) {
  const double t0 = now();
  ggml_graph_compute_with_ctx(m.ctx, m.gf, threads);
  return now() - t0;
}

bool decode_matrix(const std::string& n) {
  if (n == "output.weight") return true;
  if (n.rfind("blk.", 0) != 0) return false;
  for (const char* s : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                        "attn_qkv.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"})
    if (n.size() > std::strlen(s) && n.compare(n.size() - std::strlen(s), std::strlen(s), s) == 0)
      return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: peer_ggml MODEL.gguf THREADS TOKENS\n");
    return 2;
  }
  const int threads = std::atoi(argv[2]), T = std::atoi(argv[3]);
  ggml_cpu_init();
  ggml_context* wctx = nullptr;
  gguf_init_params gp = {false, &wctx};
  gguf_context* g = gguf_init_from_file(argv[1], gp);
  if (!g) {
    std::fprintf(stderr, "peer_ggml: cannot read %s\n", argv[1]);
    return 1;
  }
  double mat_s = 0, bytes = 0, flops = 0;
  int n = 0;
  bool tied = true;
  for (ggml_tensor* t = ggml_get_first_tensor(wctx); t; t = ggml_get_next_tensor(wctx, t))
    if (std::string(ggml_get_name(t)) == "output.weight") tied = false;
  // Every mat-vec in one graph: x [cols] and y [rows] per matrix, ~1 MB in all for a 7B.
  ggml_init_params vp = {size_t(64) << 20, nullptr, false};
  ggml_context* vctx = ggml_init(vp);
  ggml_cgraph* vgraph = ggml_new_graph_custom(vctx, 4096, false);
  for (ggml_tensor* t = ggml_get_first_tensor(wctx); t; t = ggml_get_next_tensor(wctx, t)) {
    std::string name = ggml_get_name(t);
    // A tied classifier is the embedding matrix, multiplied once per token too.
    if (!(decode_matrix(name) || (tied && name == "token_embd.weight")) || ggml_n_dims(t) != 2)
      continue;
    ggml_tensor* x = ggml_new_tensor_1d(vctx, GGML_TYPE_F32, t->ne[0]);
    float* xd = static_cast<float*>(x->data);
    for (int64_t i = 0; i < t->ne[0]; ++i) xd[i] = float((i * 7919) % 2001) / 1000.0f - 1.0f;
    ggml_build_forward_expand(vgraph, ggml_mul_mat(vctx, t, x));
    // Prefill's mat-muls are bound by arithmetic, not memory: timed one matrix at a time
    // (after a warm-up run).
    MulMat mm = make_mul_mat(t, T);
    run(mm, threads);
    mat_s += run(mm, threads);
    ggml_free(mm.ctx);
    bytes += double(ggml_nbytes(t));
    flops += 2.0 * double(t->ne[0]) * double(t->ne[1]) * T;
    ++n;
  }
  double vec_s = 1e30;
  for (int pass = 0; pass <= 3; ++pass) {  // pass 0 warms up
    const double t0 = now();
    ggml_graph_compute_with_ctx(vctx, vgraph, threads);
    if (pass > 0) vec_s = std::min(vec_s, now() - t0);
  }
  ggml_free(vctx);
  std::printf(
      "ggml: %d matrices, %.2f GB; mat-vecs %.1f ms per token (%.3f tok/s of matrix time, "
      "%.1f GB/s); mat-muls of %d tokens %.1f GFLOP/s\n",
      n, bytes / 1e9, vec_s * 1e3, 1.0 / vec_s, bytes / vec_s / 1e9, T, flops / mat_s / 1e9);
  gguf_free(g);
  ggml_free(wctx);
  return 0;
}
