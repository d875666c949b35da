// A deliberately naive LLaMA forward pass for tests: scalar loops in double precision,
// written from the papers' formulas and sharing no code with src/ beyond reading the
// weights. Slow (O(T^2 d) per head, no blocking); use it on short sequences only.
#pragma once

#include <cstdint>
#include <vector>

#include "kvscope/model/model.hpp"

namespace kvscope::test {

struct ReferenceRun {
  int T = 0;
  std::vector<double> logits;              // [T, vocab]
  std::vector<std::vector<double>> q;      // per layer [n_heads, T, head_dim], after RoPE
  std::vector<std::vector<double>> k_pre;  // per layer [n_kv_heads, T, head_dim]
  std::vector<std::vector<double>> k;      // per layer [n_kv_heads, T, head_dim], after RoPE
  std::vector<std::vector<double>> v;      // per layer [n_kv_heads, T, head_dim]
  std::vector<std::vector<double>>
      attn;  // per layer [n_heads, T, T] softmax rows (0 above the diagonal)
};

// Tokens sit at positions 0..T-1.
ReferenceRun reference_forward(const Model& m, const std::vector<int32_t>& tokens);

// RoPE of one head vector x[hd] at position p, in double: adjacent pairs as complex
// rotation (Meta's reference), rotate-half as x*cos + rotate_half(x)*sin (Hugging Face's).
void rope_ref(double* x, int hd, int p, double theta, RopeLayout layout);
// The same with explicit inverse frequencies [hd/2].
void rope_ref(double* x, int hd, int p, const std::vector<double>& inv_freq, RopeLayout layout);
// Inverse frequencies of `c`, transcribed from transformers' rope initialisers (default,
// linear, llama3) as whole-vector steps, independently of src/model/model_config.cpp.
std::vector<double> ref_inv_freq(const ModelConfig& c);

// ||a - b||_2 / ||b||_2 over all elements (b is the reference).
double rel_error(const float* a, const double* b, size_t n);

}  // namespace kvscope::test
