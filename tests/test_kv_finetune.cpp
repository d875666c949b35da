// Fine-tuning after fewer KV heads: attention-only training leaves every other weight
// bitwise alone; the `kv_head_finetune` experiment starts each run from the reduced model
// (its perplexity before training equals the runtime's on reduce_kv_heads' output), its
// curves go down, its cache bytes match a hand count, and bad settings are refused.
#include <catch2/catch.hpp>
#include <cmath>

#include "kvscope/experiments/experiment.hpp"
#include "kvscope/kv/kv_reduction.hpp"
#include "kvscope/report/table.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "kvscope/train/checkpoint.hpp"
#include "kvscope/train/trainer.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;
const std::string kModel = test::stories260k();
const std::string kValid = kData + "/text/tinystories/tinystories_valid_head.txt";
const std::string kTrain = kData + "/text/tinystories/tinystories_train_head.txt";

std::string config(const std::string& body) {
  return "kind: kv_head_finetune\nname: f\nthreads: 2\nseed: 4\nmodels:\n"
         "  - {name: s, path: " +
         kModel + "}\ntexts:\n  - {name: valid, path: " + kValid +
         ", max_bytes: 30000}\n"
         "kv_head_finetune:\n  calibration: {name: train, path: " +
         kTrain + ", max_bytes: 40000}\n  calibration_tokens: 512\n" + body;
}

std::vector<int32_t> stream_of(const Tokenizer& tok, const std::string& path, size_t bytes) {
  return token_stream(tok, {test::slurp(path).substr(0, bytes)});
}

}  // namespace

TEST_CASE("attention-only fine-tuning moves the attention weights and nothing else",
          "[train][finetune]") {
  const Model m = load_model(kModel);
  const auto tok = load_tokenizer(find_tokenizer_for(kModel));
  // svd_w on a RoPE model: compressed keys, so k_compress and q_project train too.
  const ReducedModel r = reduce_kv_heads(m, 2, ReduceMethod::kSvdW);
  const train::Layout L = train::make_layout(r.model.config);
  const std::vector<float> w0 = train::params_from_model<float>(r.model, L);
  std::vector<float> w = w0;
  train::TrainOptions o;
  o.steps = 3, o.batch = 2, o.seq_len = 48, o.warmup = 1, o.lr = 1e-3;
  o.trainable = train::attention_mask(L);
  const std::vector<int32_t> stream = stream_of(*tok, kTrain, 20000);
  train::AdamState adam;
  for (int step = 0; step < o.steps; ++step)
    train::train_step(L, o, w, adam, train::batch_at(stream, tok->bos_id, o, step), step);
  // Such a model has no Hugging Face form: saving it is refused, and nothing is left.
  test::TempDir tmp("finetune_save");
  CHECK_THROWS_WITH(train::save_checkpoint(tmp / "ck", L, w, adam, {}, kModel),
                    Contains("a model with compressed keys (k_proj_heads 4, 2 KV heads) has no "
                             "Hugging Face form"));
  CHECK_FALSE(fs::exists(tmp / "ck"));
  CHECK_FALSE(fs::exists(tmp / "ck.partial"));
  for (const train::TensorSpec& t : L.tensors) {
    INFO(t.name);
    const auto b = w0.begin() + long(t.offset), e = b + long(t.rows * t.cols);
    const bool same = std::equal(b, e, w.begin() + long(t.offset));
    if (t.name.find("self_attn") != std::string::npos)
      CHECK_FALSE(same);
    else
      CHECK(same);
  }
}

TEST_CASE("kv_head_finetune: starts from the reduced model, recovers, counts its cache",
          "[finetune][experiment]") {
  test::TempDir tmp("finetune");
  const int steps = 6, batch = 2, seq_len = 64;
  const fs::path out =
      test::run_config(tmp.path, "f",
                       config("  targets: [2]\n  methods: [mean_pool, svd_w]\n  trainable: [all]\n"
                              "  steps: 6\n  batch: 2\n  seq_len: 64\n  lr: 0.002\n  warmup: 2\n"
                              "  eval_every: 3\n  eval_tokens: 300\n"));
  const CsvData a = read_csv(out / "after_training.csv");
  REQUIRE(a.rows.size() == 3);  // original (control), mean_pool, svd_w
  const Model m = load_model(kModel);
  const auto tok = load_tokenizer(find_tokenizer_for(kModel));
  const std::vector<int32_t> valid = stream_of(*tok, kValid, 30000);
  PerplexityOptions po;
  po.max_tokens = 300;
  for (const auto& row : a.rows) {
    const std::string method = row[a.column("method")];
    INFO(method);
    // Before training: the runtime's perplexity of the model reduce_kv_heads makes (or of
    // the original), computed here independently of the experiment. CSV keeps 9 digits.
    const Model start =
        method == "original" ? m : reduce_kv_heads(m, 2, parse_reduce_method(method, "test")).model;
    CHECK(std::stod(row[a.column("perplexity_init")]) ==
          Approx(perplexity(start, *tok, valid, po).perplexity()).epsilon(1e-7));
    CHECK(std::stoll(row[a.column("tokens_trained")]) == int64_t(steps) * batch * seq_len);
    // Cache bytes by hand: 2 (K, V) x 5 layers x KV heads x head_dim 8 x 4 bytes.
    const int kv = method == "original" ? 4 : 2;
    CHECK(std::stoll(row[a.column("kv_bytes_per_token")]) == 2 * 5 * kv * 8 * 4);
  }
  // The curves: every run starts at step 0 and its held-out loss falls by the last step
  // (the reduced models start far from a minimum; a wrong gradient would not descend).
  const CsvData rc = read_csv(out / "recovery.csv");
  std::map<std::string, std::vector<double>> curve;
  for (const auto& row : rc.rows)
    curve[row[rc.column("method")]].push_back(std::stod(row[rc.column("heldout_nll")]));
  REQUIRE(curve.size() == 3);
  for (const auto& [method, nll] : curve) {
    INFO(method);
    REQUIRE(nll.size() == 3);  // steps 0, 3, 6
    if (method != "original") CHECK(nll.back() < nll.front() - 0.1);
  }
  CHECK(fs::exists(out / "recovery_s__valid__all.png"));
}

TEST_CASE("kv_head_finetune rejects bad settings with the key and values, leaving no results",
          "[finetune][experiment]") {
  test::TempDir tmp("finetune_bad");
  auto fails = [&](const std::string& body, const std::string& msg) {
    CHECK_THROWS_WITH(test::run_config(tmp.path, "f", config(body)), Contains(msg));
    CHECK_FALSE(fs::exists(tmp / "results/f"));
  };
  fails("  trainable: [ffn]\n", "kv_head_finetune.trainable: unknown value 'ffn'");
  fails("  targets: [3]\n", "kv_head_finetune.targets: 3 does not divide model 's''s 4 KV heads");
  fails("  seq_len: 1024\n", "kv_head_finetune.seq_len 1024 exceeds model 's''s context 512");
  fails("  methods: [svd_x]\n", "unknown method 'svd_x'");
  fails("  lr: 0.001\n  min_lr: 0.01\n", "0 <= min_lr <= lr (got 0.001, 0.01)");
}
