// The model module's tables: families (model/family.hpp: one row per enumerator, names
// that map back to the row from every format) and a layer's tensor slots (model.hpp: one
// row per Slot, each LayerWeights tensor once, shapes and presence by config), and a
// family added as one row (register_family) that loads in both formats.
#include <catch2/catch.hpp>
#include <set>
#include <string>

#include "gguf_convert.hpp"
#include "kvscope/model/family.hpp"
#include "kvscope/model/hf_config.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;

TEST_CASE("every family has one row and its names lead back to it", "[family]") {
  const Family all[] = {Family::kLlama,  Family::kMistral, Family::kQwen2, Family::kQwen3,
                        Family::kGemma2, Family::kGemma3,  Family::kPhi3};
  // Built-in rows are their own base (a test may have registered more: see below).
  CHECK(std::count_if(families().begin(), families().end(),
                      [](const FamilyTraits& t) { return t.base == t.family; }) == std::ssize(all));
  std::set<std::string> names, hf, gguf;
  for (Family f : all) {
    const FamilyTraits& t = traits(f);
    CHECK(t.family == f);
    CHECK(names.insert(t.name).second);
    CHECK(hf.insert(t.hf_model_type).second);
    CHECK(family_from_name(t.name) == f);
    CHECK(family_from_hf(t.hf_model_type) == f);
    if (*t.gguf_arch) {
      CHECK(gguf.insert(t.gguf_arch).second);
      CHECK(family_from_gguf(t.gguf_arch) == f);
    }
  }
  // Gemma 3: "gemma3_text" in config.json, "gemma3" in GGUF and in kvscope's own name;
  // dumps written before the names were unified say gemma3_text.
  CHECK(family_from_hf("gemma3_text") == Family::kGemma3);
  CHECK(family_from_gguf("gemma3") == Family::kGemma3);
  CHECK(family_from_name("gemma3_text") == Family::kGemma3);
  CHECK(std::string(family_name(Family::kGemma3)) == "gemma3");
  // The multimodal gemma3 config and a Mistral GGUF name (GGUF says llama) are no rows.
  CHECK_FALSE(family_from_hf("gemma3").has_value());
  CHECK_FALSE(family_from_gguf("mistral").has_value());
  CHECK_FALSE(family_from_hf("gpt2").has_value());
  CHECK(hf_model_types().rfind("llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3", 0) == 0);
  CHECK(gguf_archs().rfind("llama, qwen2, qwen3, gemma2, gemma3, phi3", 0) == 0);
}

TEST_CASE("the defaults of absent config keys are each config class's own", "[family]") {
  // transformers: Qwen3Config head_dim 128; Gemma2Config / Gemma3TextConfig head_dim 256;
  // Phi3Config rms_norm_eps 1e-5 and max_position_embeddings 4096; Gemma3TextConfig
  // rope_theta 1e6; Gemma2Config soft-caps 50 and 30.
  CHECK(traits(Family::kQwen3).head_dim == 128);
  CHECK(traits(Family::kGemma2).head_dim == 256);
  CHECK(traits(Family::kGemma3).head_dim == 256);
  CHECK(traits(Family::kLlama).head_dim == 0);
  CHECK(traits(Family::kPhi3).norm_eps == 1e-5);
  CHECK(traits(Family::kPhi3).context == 4096);
  CHECK(traits(Family::kGemma3).rope_theta == 1e6);
  CHECK(traits(Family::kGemma2).attn_softcap == 50);
  CHECK(traits(Family::kGemma2).final_softcap == 30);
  CHECK(traits(Family::kGemma3).attn_softcap == 0);
}

TEST_CASE("a layer's tensor slots: one row per Slot, each tensor once, present by config",
          "[family]") {
  const auto& rows = layer_slots();
  std::set<std::string> names;
  LayerWeights lw;
  std::set<const Tensor*> members;
  int matrices = 0;
  for (int i = 0; i < kLayerSlots; ++i) {
    CHECK(int(rows[size_t(i)].slot) == i);
    CHECK(names.insert(rows[size_t(i)].name).second);
    CHECK(members.insert(&(lw.*rows[size_t(i)].member)).second);
    matrices += rows[size_t(i)].matrix;
  }
  CHECK(matrices == 7);  // W_Q, W_K, W_V, W_O, gate, up, down
  // Every tensor of LayerWeights has a row (it holds nothing but tensors).
  CHECK(sizeof(LayerWeights) == size_t(kLayerSlots) * sizeof(Tensor));
  ModelConfig c;
  c.dim = 64, c.hidden_dim = 96, c.n_layers = 2, c.n_heads = 8, c.n_kv_heads = 2;
  c.head_dim = 16, c.vocab_size = 50;
  auto present = [&] {
    int n = 0;
    for (const SlotRow& r : rows) n += r.present(c);
    return n;
  };
  CHECK(present() == 9);  // a plain llama: 2 norms, 4 attention and 3 MLP matrices
  c.qkv_bias = c.o_bias = true;
  CHECK(present() == 13);
  c.qk_norm = c.sandwich_norms = c.mlp_bias = true;
  CHECK(present() == 20);
  // Shapes: W_Q [n_heads * head_dim, dim] = [128, 64], W_K [n_kv * head_dim, dim] = [32, 64],
  // W_down [dim, hidden] = [64, 96], q_norm [1, head_dim] = [1, 16].
  const auto shape = [&](Slot s) {
    const SlotRow& r = rows[size_t(s)];
    return std::pair(r.rows(c), r.cols(c));
  };
  CHECK(shape(Slot::kWq) == std::pair<int64_t, int64_t>(128, 64));
  CHECK(shape(Slot::kWk) == std::pair<int64_t, int64_t>(32, 64));
  CHECK(shape(Slot::kDown) == std::pair<int64_t, int64_t>(64, 96));
  CHECK(shape(Slot::kQNorm) == std::pair<int64_t, int64_t>(1, 16));
  CHECK(shape(Slot::kBk) == std::pair<int64_t, int64_t>(1, 32));
}

namespace {

constexpr Family kRenamed = Family(100);  // no enumerator: the row is the whole family

// llama's row under other names in every format (registered once per process).
void register_renamed_llama() {
  static const bool once = [] {
    FamilyTraits row = traits(Family::kLlama);
    row.family = kRenamed;
    row.name = "llama_renamed";
    row.hf_model_type = "llama_renamed";
    row.hf_architecture = "LlamaRenamedForCausalLM";
    row.gguf_arch = "llama_renamed";
    row.base = Family::kLlama;
    register_family(row);
    return true;
  }();
  (void)once;
}

std::vector<float> logits_of(const Model& m) {
  std::vector<int32_t> toks;
  for (int i = 0; i < 20; ++i) toks.push_back(int32_t((i * 13 + 5) % m.config.vocab_size));
  RunState s(m.config, 24);
  ForwardOptions o;
  o.logits = LogitsMode::kAll;
  const auto lg = forward(m, s, toks, o);
  return {lg.begin(), lg.end()};
}

}  // namespace

TEST_CASE(
    "a family that differs from llama only in names is one row: it loads from both "
    "formats and computes exactly what llama computes",
    "[family][loaders]") {
  register_renamed_llama();
  const FamilyTraits& t = traits(kRenamed);
  CHECK(std::string(t.name) == "llama_renamed");
  CHECK(base_of(kRenamed) == Family::kLlama);
  CHECK(family_from_hf("llama_renamed") == kRenamed);
  CHECK(family_from_gguf("llama_renamed") == kRenamed);
  CHECK(family_from_name("llama_renamed") == kRenamed);

  // The same random weights written as llama and as the renamed family (seeded alike).
  test::TempDir d("renamed_family");
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.dim = 64, c.hidden_dim = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
  c.head_dim = 16, c.vocab_size = 67, c.max_seq_len = 64, c.rope_theta = 10000.0f;
  spec.seed = 21;
  write_synthetic_hf_model(d / "llama", spec);
  c.family = kRenamed;
  write_synthetic_hf_model(d / "renamed", spec);
  CHECK(hf_config_json(c, DType::F32, true)["model_type"] == "llama_renamed");

  const Model llama = load_model(d / "llama"), renamed = load_model(d / "renamed");
  CHECK(llama.config.family == Family::kLlama);
  CHECK(renamed.config.family == kRenamed);
  // Same weights, same code path: the same floats, bit for bit.
  const std::vector<float> want = logits_of(llama);
  CHECK(logits_of(renamed) == want);

  // GGUF: general.architecture "llama_renamed", keys llama_renamed.*, Q/K rows permuted as
  // llama.cpp's converter permutes llama's (tests/gguf_convert.hpp writes it as its base).
  Model twin;
  test::write_gguf(d / "renamed.gguf", renamed, false, &twin);
  test::write_gguf(d / "llama.gguf", llama, false, &twin);
  const Model rg = load_model(d / "renamed.gguf"), lg = load_model(d / "llama.gguf");
  CHECK(rg.config.family == kRenamed);
  CHECK(logits_of(rg) == logits_of(lg));
  const std::vector<float> got = logits_of(rg);
  const std::vector<double> wd(want.begin(), want.end());
  CHECK(test::rel_error(got.data(), wd.data(), wd.size()) < 1e-5);  // F32 GGUF = checkpoint
}

TEST_CASE(
    "register_family refuses a taken value or name and a row whose traits differ from "
    "its base's",
    "[family]") {
  register_renamed_llama();
  FamilyTraits row = traits(Family::kLlama);
  row.family = Family(101), row.name = "other", row.hf_model_type = "other";
  row.hf_architecture = "OtherForCausalLM", row.gguf_arch = "other", row.base = Family::kLlama;
  FamilyTraits taken = row;
  taken.family = kRenamed;
  CHECK_THROWS_WITH(register_family(taken), Catch::Contains("is taken by 'llama_renamed'"));
  FamilyTraits named = row;
  named.hf_model_type = "qwen2";
  CHECK_THROWS_WITH(register_family(named), Catch::Contains("the name 'qwen2' is taken"));
  FamilyTraits maths = row;
  maths.qk_norm = true;  // Qwen3's q/k norms on llama's code path: maths, not a row
  CHECK_THROWS_WITH(register_family(maths), Catch::Contains("must be those of its base 'llama'"));
  FamilyTraits base = row;
  base.base = kRenamed;  // a base must be built in
  CHECK_THROWS_WITH(register_family(base), Catch::Contains("is not a built-in family"));
  CHECK_FALSE(family_from_hf("other").has_value());  // nothing refused was added
}
