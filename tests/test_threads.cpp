// Threading: the parallel paths give the reference results, and perplexity is
// bit-identical whatever the thread count (windows are reduced in order).
#include <catch2/catch.hpp>
#include <filesystem>

#include "kvscope/io/text_source.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "kvscope/runtime/threads.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;

namespace {
const std::string kData = KVSCOPE_TEST_DATA_DIR;

struct ThreadScope {
  int saved = get_threads();
  explicit ThreadScope(int n) { set_threads(n); }
  ~ThreadScope() { set_threads(saved); }
};
}  // namespace

TEST_CASE("multi-threaded prefill above the parallel threshold matches the reference",
          "[threads][forward]") {
  ThreadScope two(2);
  SyntheticSpec s;
  ModelConfig& c = s.config;
  c.dim = 256, c.hidden_dim = 512, c.n_layers = 2, c.n_heads = 8, c.n_kv_heads = 2;
  c.head_dim = 32, c.vocab_size = 300, c.max_seq_len = 256;
  const auto dir = std::filesystem::temp_directory_path() / "kvscope_threads_model";
  std::filesystem::remove_all(dir);
  write_synthetic_hf_model(dir, s);
  const Model m = load_model(dir);
  std::vector<int32_t> toks;
  for (int i = 0; i < 160; ++i) toks.push_back(int32_t(1 + (i * 37) % 299));
  // Attention does 8 heads x 160 x 160 x 32 = 6.5M multiply-adds, above kParallelMin
  // (2^18), so its loop over heads runs on both threads, as do the BLAS projections.
  const test::ReferenceRun ref = test::reference_forward(m, toks);
  RunState st(m.config, 160);
  const auto logits = forward(m, st, toks);
  CHECK(test::rel_error(logits.data(), ref.logits.data(), ref.logits.size()) < 1e-4);
  std::filesystem::remove_all(dir);
}

TEST_CASE("perplexity is bit-identical on 1 and 2 threads", "[threads][perplexity][model]") {
  const Model m = load_model(test::stories260k());
  const auto tok = load_tokenizer(kData + "/models/stories260K/tok512.bin");
  TextSpec ts;
  ts.path = kData + "/text/tinystories/tinystories_valid_head.txt";
  ts.doc_separator = "<|endoftext|>";
  ts.max_docs = 30;
  const std::vector<int32_t> stream = token_stream(*tok, load_documents(ts));
  PerplexityOptions o;
  o.window = 128;
  o.stride = 48;
  PerplexityResult one, two;
  {
    ThreadScope t(1);
    one = perplexity(m, *tok, stream, o);
  }
  {
    ThreadScope t(2);
    two = perplexity(m, *tok, stream, o);
  }
  CHECK(one.windows > 10);
  CHECK(one.tokens_scored == two.tokens_scored);
  CHECK(one.nll_sum == two.nll_sum);  // exact: same windows, same order of summation
}
