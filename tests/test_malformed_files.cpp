// Malformed model, tokenizer and config files and hostile command lines (issue 31, the
// classes of its audit): each gets exit code 1 (or an Error), one line naming the file, key
// or tensor with the expected and actual values, and nothing left that looks finished.
// Files are made here by patching bytes at offsets worked out from the GGUF / safetensors
// layouts, not with the readers under test.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "gguf_convert.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/json_util.hpp"
#include "kvscope/io/run_lock.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
using nlohmann::json;
using test::listing;
using test::one_line;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;
const std::string kSource = KVSCOPE_SOURCE_DIR;
const std::string kTok = kData + "/models/stories260K/tok512.bin";
const std::string kText = kData + "/text/tinystories/tinystories_valid_head.txt";
// One-layer llama, dim 32, 2 heads of 16, context 32, SentencePiece vocabulary (written by
// tests/gguf_convert.hpp; see docs/fuzzing.md).
const std::string kSpmGguf = kSource + "/fuzz/seeds/gguf/llama_f32_spm.gguf";

// GGUF metadata key `key`: the offset of its value (after the key's length, text and the
// u32 value type), found by the key's text.
size_t value_at(const std::string& bytes, const std::string& key) {
  const size_t at = bytes.find(key);
  REQUIRE(at != std::string::npos);
  return at + key.size() + 4;
}
template <class T>
void patch(std::string& bytes, size_t at, T v) {
  std::memcpy(&bytes[at], &v, sizeof v);
}
template <class T>
T peek(const std::string& bytes, size_t at) {
  T v;
  std::memcpy(&v, &bytes[at], sizeof v);
  return v;
}

// The spec of a small random-weight HF model: dim 32, 2 heads of 16, one layer.
SyntheticSpec small_spec(const char* arch = "llama") {
  SyntheticSpec spec;
  ModelConfig& c = spec.config;
  c.family = *family_from_name(arch);
  c.dim = 32, c.hidden_dim = 64, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 2;
  c.head_dim = 16, c.vocab_size = 40, c.max_seq_len = 32;
  if (c.family == Family::kGemma3) {  // Gemma's fixed structure
    c.norm_offset = 1.0f, c.sandwich_norms = true, c.mlp_act = MlpActivation::kGeluTanh;
    c.qk_norm = true, c.attn_scale = 0.25f, c.tied_embeddings = true;
  }
  return spec;
}

// A GGUF conversion of the small llama model, as bytes.
std::string small_gguf(const fs::path& dir) {
  write_synthetic_hf_model(dir / "hf", small_spec());
  const Model hf = load_model(dir / "hf");
  Model deq;
  test::write_gguf(dir / "base.gguf", hf, false, &deq);
  return test::slurp(dir / "base.gguf");
}

// The message of the Error `load(p)` throws (another exception fails the test).
template <class Load>
std::string error_of(Load&& load, const fs::path& p) {
  try {
    load(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded without an error)";
}
std::string load_error(const fs::path& p) {
  return error_of([](const fs::path& f) { load_model(f); }, p);
}
std::string tokenizer_error(const fs::path& p) {
  return error_of([](const fs::path& f) { load_tokenizer(f); }, p);
}

// config.json of `dir` with `key` set to the JSON text `value`, byte for byte as given
// ("1e39" stays 1e39, not nlohmann's 1e+39).
void set_config(const fs::path& dir, const std::string& key, const std::string& value) {
  json j = json::parse(test::slurp(dir / "config.json"));
  j[key] = "@@value@@";
  std::string text = j.dump();
  text.replace(text.find("\"@@value@@\""), 11, value);
  test::write_bytes(dir / "config.json", text);
}

// `sh -c CMD` with stderr captured; stdout goes where CMD sends it.
test::CliResult shell(const std::string& cmd, const fs::path& err_file) {
  const int status = std::system(("(" + cmd + ") 2>'" + err_file.string() + "'").c_str());
  test::CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = test::slurp(err_file);
  return r;
}

const std::string kBin = KVSCOPE_BINARY;

}  // namespace

TEST_CASE(
    "GGUF head sizes of 0 or that do not divide the rows are refused before any tensor "
    "is used",
    "[hardening][gguf]") {
  test::TempDir d("mal_gguf_sizes");
  const std::string base = small_gguf(d.path);
  const fs::path p = d / "m.gguf";
  SECTION("key_length 0") {
    std::string b = base;
    patch<uint32_t>(b, value_at(b, "llama.attention.key_length"), 0);
    patch<uint32_t>(b, value_at(b, "llama.attention.value_length"), 0);
    test::write_bytes(p, b);
    CHECK_THAT(load_error(p), Contains("m.gguf") && Contains("'llama.attention.key_length'") &&
                                  Contains("must be an integer in [1, 16777216], got 0 (u32)"));
    // The command line ends within the timeout (the old loader spun forever).
    const auto r = test::run_kvscope_sh(
        "timeout -s KILL 60 ", "generate -m " + p.string() + " --tokenizer " + kTok + " -n 1");
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
  }
  SECTION("embedding_length below head_count, no key_length") {
    std::string b = base;
    // The key renamed to a general.* key of the same length (26 bytes), which no loader reads.
    const size_t at = b.find("llama.attention.key_length");
    b.replace(at, 26, "general.kvscope_test_xxxxx");
    patch<uint32_t>(b, value_at(b, "llama.embedding_length"), 1);
    test::write_bytes(p, b);
    CHECK_THAT(load_error(p), Contains("embedding_length 1 is smaller than "
                                       "attention.head_count 2"));
  }
  SECTION("key_length that does not divide attn_q's rows") {
    std::string b = base;
    // 6: 2 heads x 6 = 12 rows expected, attn_q holds 32.
    patch<uint32_t>(b, value_at(b, "llama.attention.key_length"), 6);
    patch<uint32_t>(b, value_at(b, "llama.attention.value_length"), 6);
    patch<uint32_t>(b, value_at(b, "llama.rope.dimension_count"), 6);
    test::write_bytes(p, b);
    const std::string e = load_error(p);
    CHECK_THAT(e, Contains("m.gguf") && Contains("attn_q.weight") && Contains("12"));
    // 5: odd, so no RoPE pairs.
    patch<uint32_t>(b, value_at(b, "llama.attention.key_length"), 5);
    patch<uint32_t>(b, value_at(b, "llama.attention.value_length"), 5);
    patch<uint32_t>(b, value_at(b, "llama.rope.dimension_count"), 5);
    test::write_bytes(p, b);
    CHECK_THAT(load_error(p), Contains("even head_dim, got 5"));
  }
  SECTION("head_count_kv 0") {
    std::string b = base;
    patch<uint32_t>(b, value_at(b, "llama.attention.head_count_kv"), 0);
    test::write_bytes(p, b);
    CHECK_THAT(load_error(p), Contains("'llama.attention.head_count_kv' must be an integer in "
                                       "[1, 16777216], got 0"));
    // Every size that the file states is checked under its own key.
    for (const char* key :
         {"llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
          "llama.block_count", "llama.attention.head_count"}) {
      CAPTURE(key);
      std::string z = base;
      patch<uint32_t>(z, value_at(z, key), 0);
      test::write_bytes(p, z);
      CHECK_THAT(load_error(p), Contains(std::string("'") + key + "' must be an integer in [1, "));
    }
  }
}

TEST_CASE("tokenizer.json components nested without bound are refused by name",
          "[hardening][tokenizer]") {
  test::TempDir d("mal_tok_nest");
  const json base = json::parse(test::slurp(kData + "/models/tinystories656K/tokenizer.json"));
  // depth: Sequence inside Sequence `depth` times around an empty list.
  auto nested = [](const char* list_key, int depth) {
    json inner = {{"type", "Sequence"}, {list_key, json::array()}};
    for (int i = 0; i < depth; ++i)
      inner = json{{"type", "Sequence"}, {list_key, json::array({inner})}};
    return inner;
  };
  for (const auto& [field, list_key] :
       {std::pair{"normalizer", "normalizers"}, std::pair{"pre_tokenizer", "pretokenizers"},
        std::pair{"decoder", "decoders"}, std::pair{"post_processor", "processors"}}) {
    CAPTURE(field);
    json j = base;
    // 20 levels: JSON 42 deep, within the parser's bound; the Sequence bound (16) names it.
    j[field] = nested(list_key, 20);
    test::write_bytes(d / "tokenizer.json", j.dump());
    CHECK_THAT(tokenizer_error(d / "tokenizer.json"),
               Contains("tokenizer.json") && Contains(field) &&
                   Contains("Sequence nested more than 16 levels deep"));
    // Real files nest two levels: still read.
    j[field] = nested(list_key, 2);
    test::write_bytes(d / "tokenizer.json", j.dump());
    if (std::string(field) != "decoder" && std::string(field) != "post_processor")
      CHECK_NOTHROW(load_tokenizer(d / "tokenizer.json"));
  }
  // Tens of thousands deep (the audit's case), built as text: refused by the JSON reader
  // before any value is built, through the command line.
  std::string text;
  for (int i = 0; i < 40000; ++i) text += R"({"type":"Sequence","normalizers":[)";
  for (int i = 0; i < 40000; ++i) text += "]}";
  json j = base;
  j["normalizer"] = nullptr;
  std::string file = j.dump();
  const size_t at = file.find("\"normalizer\":null");
  REQUIRE(at != std::string::npos);
  file.replace(at, 17, "\"normalizer\":" + text);
  test::write_bytes(d / "tokenizer.json", file);
  const auto r =
      test::run_kvscope("tokenize --tokenizer " + (d / "tokenizer.json").string() + " -p Once");
  CHECK(r.exit_code == 1);
  CHECK(one_line(r.err));
  CHECK_THAT(r.err, Contains("tokenizer.json") && Contains("nested more than 64 levels"));
}

TEST_CASE(
    "config.json integers that wrap, truncate or are not integers are refused with the "
    "value as written",
    "[hardening][config]") {
  test::TempDir d("mal_cfg_int");
  write_synthetic_hf_model(d / "m", small_spec());
  const std::string good = test::slurp(d / "m" / "config.json");
  struct Case {
    const char* key;
    const char* value;
  };
  for (const Case& c : {Case{"num_hidden_layers", "4294967298"},  // 2^32 + 2, read as 2 before
                        Case{"num_hidden_layers", "2.9"}, Case{"num_hidden_layers", "1.0"},
                        Case{"num_hidden_layers", "true"}, Case{"hidden_size", "2147483680"},
                        Case{"num_attention_heads", "-2"}, Case{"vocab_size", "\"40\""},
                        Case{"max_position_embeddings", "1e3"},
                        Case{"num_key_value_heads", "18446744073709551617"}}) {
    CAPTURE(c.key, c.value);
    test::write_bytes(d / "m" / "config.json", good);
    set_config(d / "m", c.key, c.value);
    // The value exactly as written (1e3 is not shown as 1000.0, nor 2^64 + 1 as a float).
    CHECK_THAT(load_error(d / "m"), Contains("config.json") && Contains(c.key) &&
                                        Contains("must be an integer in [") &&
                                        Contains(std::string("got ") + c.value));
  }
  // A rejected large value is shown as written, never as a wrapped int.
  test::write_bytes(d / "m" / "config.json", good);
  set_config(d / "m", "bos_token_id", "3000000000");
  const std::string e = load_error(d / "m");
  CHECK_THAT(e, Contains("got 3000000000"));
  CHECK_THAT(e, !Contains("-1294967296") && !Contains("-2147483648"));
  test::write_bytes(d / "m" / "config.json", good);
  CHECK_NOTHROW(load_model(d / "m"));
}

TEST_CASE("non-finite and meaningless numbers are refused", "[hardening][config]") {
  test::TempDir d("mal_cfg_num");
  SECTION("config.json: 1e39 overflows a float, NaN-like text, negative ids") {
    write_synthetic_hf_model(d / "m", small_spec());
    const std::string good = test::slurp(d / "m" / "config.json");
    for (const auto& [key, value, expect] :
         {std::tuple{"rms_norm_eps", "1e39", "got 1e39"},
          std::tuple{"rope_theta", "1e39", "got 1e39"},
          std::tuple{"rope_theta", "1E+39", "got 1E+39"},
          std::tuple{"rms_norm_eps", "1e-50", "1e-50"}, std::tuple{"rms_norm_eps", "0", "got 0"},
          std::tuple{"rope_theta", "-5", "got -5"}, std::tuple{"bos_token_id", "-1", "got -1"},
          std::tuple{"eos_token_id", "-2", "got -2"},
          std::tuple{"eos_token_id", "[2, -7]", "got -7"}}) {
      CAPTURE(key, value);
      test::write_bytes(d / "m" / "config.json", good);
      set_config(d / "m", key, value);
      CHECK_THAT(load_error(d / "m"), Contains(key) && Contains(expect));
    }
  }
  SECTION("phi3: rotary dims that round to 0, a zero longrope attention factor") {
    SyntheticSpec spec = small_spec("phi3");
    write_synthetic_hf_model(d / "m", spec);
    const std::string good = test::slurp(d / "m" / "config.json");
    // int(16 x 0.05) = 0: transformers rotates nothing; kvscope's 0 means "all".
    set_config(d / "m", "partial_rotary_factor", "0.05");
    CHECK_THAT(load_error(d / "m"), Contains("partial_rotary_factor 0.05 x head_dim 16 gives 0"));
    test::write_bytes(d / "m" / "config.json", good);
    set_config(d / "m", "original_max_position_embeddings", "16");
    set_config(d / "m", "rope_scaling",
               R"({"type": "longrope", "short_factor": [1,1,1,1,1,1,1,1],
                   "long_factor": [2,2,2,2,2,2,2,2], "attention_factor": 0})");
    CHECK_THAT(load_error(d / "m"),
               Contains("attention_factor must be positive") && Contains("got 0"));
    set_config(d / "m", "rope_scaling",
               R"({"type": "longrope", "short_factor": [1,1,1,1,1,1,1,1],
                   "long_factor": [2,2,2,2,2,2,2,2]})");
    CHECK_NOTHROW(load_model(d / "m"));  // absent: derived, as transformers does
  }
  SECTION("gemma3: a zero local RoPE base is not the global one") {
    SyntheticSpec spec = small_spec("gemma3_text");
    write_synthetic_hf_model(d / "m", spec);
    set_config(d / "m", "rope_local_base_freq", "0");
    CHECK_THAT(load_error(d / "m"), Contains("rope_local_base_freq") && Contains("got 0"));
  }
  SECTION("GGUF: infinite eps and theta, a NaN token score") {
    const std::string base = test::slurp(kSpmGguf);
    const fs::path p = d / "m.gguf";
    for (const char* key : {"llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base"}) {
      CAPTURE(key);
      std::string b = base;
      REQUIRE(peek<uint32_t>(b, value_at(b, key) - 4) == 6);  // f32
      patch<float>(b, value_at(b, key), std::numeric_limits<float>::infinity());
      test::write_bytes(p, b);
      CHECK_THAT(load_error(p), Contains(key) && Contains("finite") && Contains("got inf"));
    }
    std::string b = base;
    // tokenizer.ggml.scores: value type ARR, element type F32, count, then the floats.
    const size_t at = value_at(b, "tokenizer.ggml.scores");
    REQUIRE(peek<uint32_t>(b, at) == 6);
    patch<float>(b, at + 4 + 8 + 4 * 3, std::numeric_limits<float>::quiet_NaN());
    test::write_bytes(p, b);
    CHECK_THAT(tokenizer_error(p), Contains("tokenizer.ggml.scores[3]") && Contains("got nan"));
    // A negative id, as u32: 2^32 - 1.
    b = base;
    patch<uint32_t>(b, value_at(b, "tokenizer.ggml.bos_token_id"), 0xFFFFFFFFu);
    test::write_bytes(p, b);
    CHECK_THAT(load_error(p), Contains("tokenizer.ggml.bos_token_id") && Contains("4294967295"));
  }
}

TEST_CASE("tensors whose bytes overlap are refused in GGUF and safetensors files",
          "[hardening][gguf][loaders]") {
  test::TempDir d("mal_overlap");
  SECTION("GGUF: attn_v's offset moved onto attn_k's") {
    std::string b = small_gguf(d.path);
    // Tensor info: name (u64 length + text), u32 n_dims, n_dims x u64, u32 type, u64 offset.
    auto offset_at = [&](const std::string& name) {
      const size_t at = b.find(name);
      REQUIRE(at != std::string::npos);
      const uint32_t nd = peek<uint32_t>(b, at + name.size());
      return at + name.size() + 4 + 8 * nd + 4;
    };
    const uint64_t k_off = peek<uint64_t>(b, offset_at("blk.0.attn_k.weight"));
    patch<uint64_t>(b, offset_at("blk.0.attn_v.weight"), k_off);
    test::write_bytes(d / "m.gguf", b);
    CHECK_THAT(load_error(d / "m.gguf"), Contains("m.gguf") && Contains("blk.0.attn_k.weight") &&
                                             Contains("blk.0.attn_v.weight") &&
                                             Contains("share bytes"));
  }
  SECTION("safetensors: v_proj's data_offsets set to k_proj's") {
    write_synthetic_hf_model(d / "m", small_spec());
    const std::string f = test::slurp(d / "m" / "model.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, f.data(), 8);
    json h = json::parse(f.substr(8, n));
    h["model.layers.0.self_attn.v_proj.weight"]["data_offsets"] =
        h["model.layers.0.self_attn.k_proj.weight"]["data_offsets"];
    std::string hs = h.dump();
    hs.resize((hs.size() + 7) / 8 * 8, ' ');
    const uint64_t hn = hs.size();
    std::string out(8, '\0');
    std::memcpy(out.data(), &hn, 8);
    test::write_bytes(d / "m" / "model.safetensors", out + hs + f.substr(8 + n));
    CHECK_THAT(load_error(d / "m"), Contains("model.safetensors") && Contains("share bytes") &&
                                        Contains("k_proj.weight") && Contains("v_proj.weight"));
  }
}

TEST_CASE("memory stays bounded by what a command holds", "[hardening][memory]") {
  test::TempDir d("mal_memory");
  const std::string limit = test::memory_limit_3gb() + "timeout -s KILL 120 ";
  SECTION("tokenize --text /dev/zero stops at its read limit") {
    const auto r =
        test::run_kvscope_sh(limit, "tokenize --tokenizer " + kTok + " --text /dev/zero");
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("/dev/zero") && Contains("more than 268435456 bytes"));
  }
  SECTION("a tokenizer or config.json that is /dev/zero stops at its read limit") {
    const auto r = test::run_kvscope_sh(limit, "tokenize --tokenizer /dev/zero -p Once");
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("tokenizer file") && Contains("/dev/zero") &&
                          Contains("more than 268435456 bytes"));
    fs::create_directories(d / "m");
    fs::create_symlink("/dev/zero", d / "m" / "config.json");
    const auto c = test::run_kvscope_sh(
        limit, "generate -m " + (d / "m").string() + " --tokenizer " + kTok + " -n 1");
    CHECK(c.exit_code == 1);
    CHECK(one_line(c.err));
    CHECK_THAT(c.err, Contains("config.json") && Contains("more than 67108864 bytes"));
  }
  SECTION("run /dev/zero: the YAML reader stops at 16 MiB") {
    const auto r = test::run_kvscope_sh(limit, "run /dev/zero --results " + (d / "r").string());
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("YAML config") && Contains("/dev/zero") &&
                          Contains("more than 16777216 bytes"));
    CHECK(!fs::exists(d / "r" / "zero"));
  }
  SECTION("generate sizes its KV cache to the prompt and new tokens, not a 16M context") {
    std::string b = test::slurp(kSpmGguf);
    // By hand: 1 layer x 2 KV heads x 16777216 slots x 16 x 4 bytes x (K and V) = 4 GiB,
    // over the 3 GB limit; two prompt tokens and two new ones need 4 slots.
    patch<uint32_t>(b, value_at(b, "llama.context_length"), 1u << 24);
    test::write_bytes(d / "long.gguf", b);
    const auto r = test::run_kvscope_sh(
        limit, "generate -q -m " + (d / "long.gguf").string() + " -p Once -n 2");
    CHECK(r.exit_code == 0);
    CHECK(r.err.empty());
  }
}

TEST_CASE(
    "model and text names from a YAML config stay inside the results directory and "
    "are distinct",
    "[hardening][config]") {
  test::TempDir d("mal_names");
  const std::string model = test::stories260k();
  auto yaml = [&](const std::string& mname, const std::string& tname) {
    return "kind: dump_kv\nmodels:\n  - {name: " + mname + ", path: " + model +
           ", tokenizer: " + kTok + "}\ntexts:\n  - {name: " + tname + ", path: " + kText +
           ", max_bytes: 4000}\ndump_kv: {n_seq: 1, seq_len: 16}\n";
  };
  struct Case {
    std::string model, text, expect;
  };
  for (const Case& c :
       {Case{"'../../escaped'", "t", "models[0].name '../../escaped'"},
        Case{"m", "'../x'", "texts[0].name '../x'"}, Case{"'..'", "t", "must be a plain name"},
        Case{"\"a\\0b\"", "t", "'a\\x00b' must be a plain name"},
        Case{"\"a\\nb\"", "t", "'a\\nb' must be a plain name"}}) {
    CAPTURE(c.model, c.text);
    test::write_bytes(d / "names.yaml", yaml(c.model, c.text));
    const auto r = test::run_kvscope("run -q " + (d / "names.yaml").string() + " --results " +
                                     (d / "sub" / "results").string());
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("names.yaml") && Contains(c.expect));
    CHECK(!fs::exists(d / "escaped"));
    CHECK(!fs::exists(d / "sub" / "x__t.h5"));
  }
  test::write_bytes(d / "dup.yaml", "kind: perplexity\nmodels:\n  - {name: a, path: " + model +
                                        ", tokenizer: " + kTok + "}\n  - {name: a, path: " + model +
                                        ", tokenizer: " + kTok + "}\ntexts:\n  - {path: " + kText +
                                        ", max_bytes: 2000}\n");
  const auto r = test::run_kvscope("run -q " + (d / "dup.yaml").string() + " --results " +
                                   (d / "results").string());
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("models[0] and models[1] are both named 'a'") && !Contains("--force"));
}

TEST_CASE(
    "one run per results directory: a second run or dump is refused by name while the "
    "first holds it",
    "[hardening][faults]") {
  test::TempDir d("mal_lock");
  const std::string model = test::stories260k();
  test::write_bytes(d / "ppl.yaml", "kind: perplexity\nmodels:\n  - {path: " + model +
                                        ", tokenizer: " + kTok + "}\ntexts:\n  - {path: " + kText +
                                        ", max_bytes: 3000}\nperplexity: {window: 32}\n");
  const std::string run =
      "run -q " + (d / "ppl.yaml").string() + " --results " + (d / "results").string();
  {
    const OutputLock held(d / "results", "ppl");  // as a first run would hold it
    // The lock is per open file: a second holder in this process is refused too.
    CHECK_THROWS_WITH(OutputLock(d / "results", "ppl"), Contains("being written by another"));
    const auto r = test::run_kvscope(run);
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains((d / "results" / "ppl").string()) &&
                          Contains("being written by another kvscope process (pid " +
                                   std::to_string(::getpid())));
    CHECK(listing(d / "results") == std::vector<std::string>{".ppl.lock"});
    // A dump to a file another dump is writing.
    const OutputLock dump_held(d.path, "k.h5");
    const auto r2 =
        test::run_kvscope("dump -q -m " + model + " --tokenizer " + kTok + " --text " + kText +
                          " --n-seq 1 --seq-len 16 -o " + (d / "k.h5").string());
    CHECK(r2.exit_code == 1);
    CHECK_THAT(r2.err, Contains("k.h5 is being written by another kvscope process"));
    CHECK(!fs::exists(d / "k.h5"));
  }
  // Released (and its file removed): the run goes ahead and leaves no lock file.
  const auto r = test::run_kvscope(run);
  CHECK(r.exit_code == 0);
  CHECK(listing(d / "results") == std::vector<std::string>{"ppl"});
}

TEST_CASE("output that cannot be written fails the command", "[hardening][faults]") {
  test::TempDir d("mal_full");
  const std::string model = test::stories260k();
  for (const std::string& args :
       {"generate -q -m " + model + " -n 8", "tokenize --tokenizer " + kTok + " -p Once",
        std::string("--help"), std::string("run --help")}) {
    CAPTURE(args);
    const auto r = shell("'" + kBin + "' " + args + " >/dev/full", d / "err");
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("writing to standard output failed") &&
                          Contains("No space left on device"));
  }
  // A closed stdout likewise.
  const auto r = shell("'" + kBin + "' tokenize --tokenizer " + kTok + " -p Once >&-", d / "err");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("writing to standard output failed"));
}

TEST_CASE("messages name what is wrong", "[hardening][messages]") {
  test::TempDir d("mal_messages");
  SECTION("an unknown command is named") {
    const auto r = test::run_kvscope("frobnicate --model x");
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("unknown command 'frobnicate'") && Contains("generate") &&
                          Contains("tokenize"));
  }
  SECTION("an unknown plot kind is named; a bound is stated without DBL_MAX") {
    const auto r = test::run_kvscope("plot bogus x.csv");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("unknown command 'bogus' for 'kvscope plot'") && Contains("heads"));
    const auto n = test::run_kvscope("generate -m x -n -1");
    CHECK(n.exit_code == 1);
    CHECK(one_line(n.err));
    CHECK_THAT(n.err, Contains("--max-tokens: must be >= 0, got -1") && !Contains("1797693"));
  }
  SECTION("a .gguf file with a wrong magic is a broken GGUF file") {
    std::string b = test::slurp(kSpmGguf);
    b.replace(0, 4, "GGUX");
    test::write_bytes(d / "bad.gguf", b);
    CHECK_THAT(load_error(d / "bad.gguf"),
               Contains("bad.gguf") && Contains("not a GGUF file") && Contains("magic 0x58554747"));
    const auto r = test::run_kvscope("generate -m " + (d / "bad.gguf").string() + " -n 1");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("not a GGUF file") && !Contains("llama2.c"));
  }
  SECTION("general.architecture of the wrong type is not 'missing'") {
    test::GgufWriter g;
    g.u32("general.architecture", 7);
    test::write_bytes(d / "arch.gguf", g.bytes());
    CHECK_THAT(load_error(d / "arch.gguf"),
               Contains("'general.architecture' must be a string, got 7 (u32)"));
  }
  SECTION("tokenizer.json values of the wrong type name their key") {
    const json base = json::parse(test::slurp(kData + "/models/tinystories656K/tokenizer.json"));
    struct Case {
      std::function<void(json&)> edit;
      std::string expect;
    };
    const std::vector<Case> cases = {
        {[](json& j) { j["model"]["dropout"] = "high"; }, "model.dropout \"high\""},
        {[](json& j) { j["model"]["continuing_subword_prefix"] = 7; },
         "model.continuing_subword_prefix 7"},
        {[](json& j) { j["added_tokens"] = json::object(); }, "added_tokens: expected an array"},
        {[](json& j) { j["added_tokens"] = json::array({5}); },
         "added_tokens[0]: expected an object with key 'id', got 5"},
        {[](json& j) { j["model"] = "BPE"; }, "model: expected an object, got \"BPE\""},
        {[](json& j) {
           j["normalizer"] = {{"type", "Sequence"}, {"normalizers", "NFC"}};
         },
         "normalizer Sequence.normalizers: expected an array, got \"NFC\""},
        {[](json& j) {
           j["post_processor"] = {{"type", "TemplateProcessing"},
                                  {"single", json::array({{{"SpecialToken", {{"id", "<s>"}}}}})},
                                  {"special_tokens", {{"<s>", {{"ids", {4294967297LL}}}}}}};
         },
         "special_tokens.<s>.ids: expected one id (an integer >= 0), got [4294967297]"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.expect);
      json j = base;
      c.edit(j);
      test::write_bytes(d / "tokenizer.json", j.dump());
      const std::string e = tokenizer_error(d / "tokenizer.json");
      CHECK_THAT(e, Contains("tokenizer.json") && Contains(c.expect) && !Contains("type_error"));
    }
  }
}

TEST_CASE("the JSON reader bounds nesting and reads integers exactly", "[hardening][json]") {
  CHECK(json_nesting(R"({"a": [1, {"b": "[[[[{{{"}]})") == 3);
  CHECK(json_nesting(R"("\"[" [[]])") == 2);
  CHECK_THROWS_WITH(parse_json(std::string(100, '[') + std::string(100, ']'), "x.json"),
                    Contains("x.json") && Contains("nested more than 64 levels"));
  CHECK(parse_json("[[1]]", "x.json") == json::parse("[[1]]"));
  CHECK_THROWS_WITH(parse_json("{", "x.json"), Contains("x.json: not valid JSON"));
  CHECK(json_integer(json::parse("7"), 0, 10) == 7);
  CHECK(!json_integer(json::parse("7.0"), 0, 10));
  CHECK(!json_integer(json::parse("true"), 0, 10));
  CHECK(!json_integer(json::parse("11"), 0, 10));
  CHECK(!json_integer(json::parse("18446744073709551615"), 0, INT64_MAX));
  CHECK(json_integer(json::parse("-3"), -5, 0) == -3);
  CHECK(!json_finite(json::parse("true")));
  CHECK(json_finite(json::parse("2.5")) == 2.5);
  CHECK(json_brief(json(std::numeric_limits<double>::infinity())) == "inf");
  const auto texts =
      json_float_texts(R"({"a": 1e39, "b": [1, 2.50, {"c/d": -0.0}], "e": 3, "r": {"f": 1E5}})");
  CHECK(texts == std::map<std::string, std::string>{
                     {"/a", "1e39"}, {"/b/1", "2.50"}, {"/b/2/c~1d", "-0.0"}, {"/r/f", "1E5"}});
  CHECK(json_float_texts("{").empty());
  CHECK(json_brief(json(std::string(300, 'a')), 10) == "\"aaaaaaaaa...");
}

TEST_CASE(
    "malformed models of every class fail `kvscope dump` with one line and no output "
    "file",
    "[hardening][cli]") {
  test::TempDir d("mal_cli_dump");
  const std::string base = small_gguf(d.path);
  struct Bad {
    fs::path model;
    std::string expect;
  };
  std::vector<Bad> bad;
  {  // class 1: head size 0
    std::string b = base;
    patch<uint32_t>(b, value_at(b, "llama.attention.key_length"), 0);
    test::write_bytes(d / "k0.gguf", b);
    bad.push_back({d / "k0.gguf", "key_length"});
  }
  {  // class 4: an infinite eps
    std::string b = base;
    patch<float>(b, value_at(b, "llama.attention.layer_norm_rms_epsilon"),
                 std::numeric_limits<float>::infinity());
    test::write_bytes(d / "eps.gguf", b);
    bad.push_back({d / "eps.gguf", "layer_norm_rms_epsilon"});
  }
  {  // class 3: 2.9 layers
    write_synthetic_hf_model(d / "layers", small_spec());
    set_config(d / "layers", "num_hidden_layers", "2.9");
    bad.push_back({d / "layers", "got 2.9"});
  }
  {  // class 5: overlapping tensors
    std::string b = base;
    const std::string name = "blk.0.attn_v.weight";
    const size_t at = b.find(name) + name.size();
    const size_t off = at + 4 + 8 * peek<uint32_t>(b, at) + 4;
    patch<uint64_t>(b, off, 0);  // onto token_embd.weight, the first tensor
    test::write_bytes(d / "overlap.gguf", b);
    bad.push_back({d / "overlap.gguf", "share bytes"});
  }
  fs::create_directories(d / "out");
  for (const Bad& m : bad) {
    CAPTURE(m.model);
    const auto r =
        test::run_kvscope("dump -q -m " + m.model.string() + " --tokenizer " + kTok + " --text " +
                          kText + " --n-seq 1 --seq-len 8 -o " + (d / "out" / "k.h5").string());
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains(m.model.filename().string()) && Contains(m.expect));
    CHECK(listing(d / "out").empty());
  }
}
