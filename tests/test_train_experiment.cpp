// The `train` experiment: a run interrupted and resumed ends with the same weights as one
// that was not; the checkpoint loads as an ordinary model whose runtime perplexity is the
// trainer's held-out loss; a checkpoint from another config is refused.
#include <catch2/catch.hpp>
#include <cmath>

#include "kvscope/experiments/experiment.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/report/table.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "kvscope/train/trainer.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

std::string config(int steps, const std::string& extra = "") {
  return "kind: train\nname: t\nthreads: 2\nseed: 5\ntexts:\n  - path: " + kData +
         "/text/tinystories/tinystories_train_head.txt\n    max_bytes: 30000\n"
         "train:\n  tokenizer: " +
         kData +
         "/models/stories260K/tok512.bin\n"
         "  architecture: {dim: 16, hidden_dim: 24, n_layers: 2, n_heads: 4, n_kv_heads: 2, "
         "context: 24}\n"
         "  eval_text: {path: " +
         kData +
         "/text/tinystories/tinystories_valid_head.txt, "
         "max_bytes: 8000}\n"
         "  eval_tokens: 300\n  eval_every: 2\n  batch: 3\n  warmup: 2\n  lr: 0.01\n"
         "  checkpoint_every: 2\n  steps: " +
         std::to_string(steps) + "\n" + extra;
}

// Reruns replace the earlier results, as `kvscope run --force` does to continue training.
fs::path run(const fs::path& root, const std::string& yaml) {
  return test::run_config(root, "t", yaml, /*force=*/true);
}

}  // namespace

TEST_CASE("train: resuming gives the weights of an uninterrupted run", "[train][experiment]") {
  test::TempDir a("train_a"), b("train_b");
  run(a.path, config(8, "  stop_after: 3\n"));  // "killed" after step 3, checkpoint at 2
  const fs::path ra = run(a.path, config(8));   // continues from the checkpoint
  const fs::path rb = run(b.path, config(8));
  const fs::path ca = a / "results/checkpoints/t", cb = b / "results/checkpoints/t";
  CHECK(test::slurp(ca / "model.safetensors") == test::slurp(cb / "model.safetensors"));
  CHECK(test::slurp(ra / "loss.csv") == test::slurp(rb / "loss.csv"));
  CHECK(test::slurp(ra / "eval.csv") == test::slurp(rb / "eval.csv"));
  CHECK(read_csv(ra / "loss.csv").rows.size() == 8);

  // The checkpoint is an ordinary Hugging Face model: the runtime forward pass scores the
  // held-out windows as the trainer did (two implementations; float, 1e-4 relative).
  const Model m = load_model(cb);
  const auto tok = load_tokenizer(find_tokenizer_for(cb));
  const auto stream = token_stream(
      *tok, {test::slurp(kData + "/text/tinystories/tinystories_valid_head.txt").substr(0, 8000)});
  const CsvData ev = read_csv(rb / "eval.csv");
  const double last = std::stod(ev.rows.back()[ev.column("heldout_nll")]);
  const auto held = train::heldout_windows(stream, m.config.bos_id, 24, 300);
  double nll = 0;
  int n = 0;
  for (const auto& s : held) {
    RunState st(m.config, int(s.size()));
    const auto lg = forward(m, st, s);
    double seq = 0;
    for (size_t t = 0; t + 1 < s.size(); ++t)
      seq += token_nll(lg.subspan(t * m.config.vocab_size, m.config.vocab_size), s[t + 1]);
    nll += seq / double(s.size() - 1), ++n;
  }
  CHECK(nll / n == Approx(last).epsilon(1e-4));

  // A different config must not silently continue someone else's checkpoint.
  CHECK_THROWS_WITH(run(a.path, config(10, "  weight_decay: 0.5\n")),
                    Contains("made by a different config"));
}

TEST_CASE("train rejects bad settings with the key and values, leaving no results",
          "[train][experiment]") {
  test::TempDir tmp("train_bad");
  auto fails = [&](const std::string& yaml, const std::string& msg) {
    CHECK_THROWS_WITH(run(tmp.path, yaml), Contains(msg));
    CHECK_FALSE(fs::exists(tmp / "results/t"));
    CHECK_FALSE(fs::exists(tmp / "results/checkpoints/t"));
  };
  fails(config(4, "  seq_len: 48\n"), "train.seq_len 48 exceeds the context 24");
  fails(config(4, "  min_lr: 0.5\n"), "0 <= min_lr <= lr (got 0.01, 0.5)");
  std::string missing = config(4);
  missing.replace(missing.find("tok512.bin"), 10, "nosuch.bin");
  fails(missing, "train.tokenizer '" + kData + "/models/stories260K/nosuch.bin' does not exist");
  fails(config(4, "  architecture_typo: 1\n"), "unknown key 'architecture_typo'");
}

TEST_CASE("train.init starts from another model's weights; other architectures are refused",
          "[train][experiment]") {
  test::TempDir a("train_init_a"), b("train_init_b"), c("train_init_c"), d("train_init_d");
  const fs::path ra = run(a.path, config(4));
  const fs::path ck = a / "results/checkpoints/t";
  // Stage two's evaluation before its first step scores stage one's final weights: the
  // same number as stage one's last evaluation (same windows, same weights).
  const fs::path rb = run(b.path, config(2, "  init: " + ck.string() + "\n"));
  const fs::path rc = run(c.path, config(2));
  const CsvData ea = read_csv(ra / "eval.csv"), eb = read_csv(rb / "eval.csv"),
                ec = read_csv(rc / "eval.csv");
  CHECK(eb.rows.front()[eb.column("heldout_nll")] == ea.rows.back()[ea.column("heldout_nll")]);
  CHECK(ec.rows.front()[ec.column("heldout_nll")] != ea.rows.back()[ea.column("heldout_nll")]);
  CHECK_THROWS_WITH(
      run(d.path, config(2, "  init: " + kData + "/models/stories260K/stories260K.bin\n")),
      Contains("train.init '" + kData +
               "/models/stories260K/stories260K.bin' has "
               "another architecture (dim 64"));
  // A missing init fails the run by name (checked at run time: a curriculum's later
  // stages are read by `kvscope tables` before the earlier ones have run).
  CHECK_THROWS_WITH(run(d.path, config(2, "  init: " + (d.path / "nosuch").string() + "\n")),
                    Contains("train.init '" + (d.path / "nosuch").string() + "' does not exist"));
  CHECK_FALSE(fs::exists(d.path / "results/t/eval.csv"));
  // The same shapes in llama2.c's layout: its Q/K rows are in adjacent-pair RoPE order, so
  // copying them into the rotate-half trainer would compute another model.
  {
    const int D = 16, H = 24, L = 2, V = 512, S = 24, KV = 8;
    std::string bytes;
    for (int32_t v : {D, H, L, 4, 2, V, S}) bytes.append(reinterpret_cast<const char*>(&v), 4);
    const size_t floats = size_t(V) * D + L * (D + D * D + 2 * D * KV + D * D + D + 3 * H * D) + D +
                          size_t(S) * (D / 4 / 2) * 2;
    std::vector<float> w(floats, 0.01f);
    bytes.append(reinterpret_cast<const char*>(w.data()), w.size() * 4);
    test::write_bytes(d.path / "adjacent.bin", bytes);
    REQUIRE(load_model(d.path / "adjacent.bin").config.dim == D);
    CHECK_THROWS_WITH(
        run(d.path, config(2, "  init: " + (d.path / "adjacent.bin").string() + "\n")),
        Contains("has another architecture (dim 16, hidden 24, layers 2, heads "
                 "4/2, head_dim 4, vocab 512, rope adjacent_pairs theta 10000)"));
  }
  // What the trainer cannot compute is refused by name, not dropped.
  {
    SyntheticSpec spec;
    ModelConfig& q = spec.config;
    q.family = Family::kQwen2, q.qkv_bias = true;
    q.dim = 16, q.hidden_dim = 24, q.n_layers = 2, q.n_heads = 4, q.n_kv_heads = 2;
    q.head_dim = 4, q.vocab_size = 512, q.max_seq_len = 24, q.tied_embeddings = true;
    write_synthetic_hf_model(d.path / "biased", spec);
    CHECK_THROWS_WITH(run(d.path, config(2, "  init: " + (d.path / "biased").string() + "\n")),
                      Contains("training: models with attention or MLP biases are not supported"));
  }
}

TEST_CASE("train.random_blocks: ids must leave out BOS and EOS, two copies must fit",
          "[train][experiment]") {
  test::TempDir tmp("train_blocks_bad");
  CHECK_THROWS_WITH(
      run(tmp.path,
          config(2, "  random_blocks: {share: 0.5, min_len: 2, max_len: 5, token_lo: 0}\n")),
      Contains("random_blocks token ids [0, 512) must lie inside the vocabulary "
               "[0, 512) and leave out BOS 1 and EOS 2"));
  CHECK_THROWS_WITH(
      run(tmp.path,
          config(2, "  random_blocks: {share: 0.5, min_len: 2, max_len: 5, embedded: 2}\n")),
      Contains("train.random_blocks.embedded must be in [0, 1], got 2"));
  CHECK_THROWS_WITH(
      run(tmp.path, config(2, "  random_blocks: {share: 0.5, min_len: 2, max_len: 12}\n")),
      Contains("random_blocks.max_len 12 leaves fewer than two copies in a sequence of 24"));
  CHECK_FALSE(fs::exists(tmp.path / "results/t/eval.csv"));
}
