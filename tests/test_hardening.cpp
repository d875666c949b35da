// Adversarial inputs (issue 14): each malformed file, config or command line gets exit code
// 1, one line on stderr naming the file / key / tensor with the expected and actual values,
// and no output that looks finished. Expected numbers are computed here by hand from the
// file layouts, not taken from the code under test.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/threads.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
using test::listing;
using test::one_line;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;
const std::string kModel = test::stories260k();
const std::string kTok = kData + "/models/stories260K/tok512.bin";
const std::string kText = kData + "/text/tinystories/tinystories_valid_head.txt";

// A llama2.c header (7 int32: dim, hidden, layers, heads, kv heads, vocab, seq) and `tail`.
std::string llama2c_header(std::initializer_list<int32_t> h, size_t tail) {
  std::string b(reinterpret_cast<const char*>(std::data(h)), h.size() * 4);
  return b + std::string(tail, '\0');
}

// A tiny random-weight HF model spec: dim 16, 2 heads of 8, vocabulary 32, context 16.
SyntheticSpec tiny_spec(int layers) {
  SyntheticSpec spec;
  spec.config.dim = 16;
  spec.config.hidden_dim = 32;
  spec.config.n_layers = layers;
  spec.config.n_heads = 2;
  spec.config.n_kv_heads = 2;
  spec.config.head_dim = 8;
  spec.config.vocab_size = 32;
  spec.config.max_seq_len = 16;
  return spec;
}

std::string dump_args(const std::string& model, const std::string& out,
                      const std::string& extra = "", int n_seq = 2, int seq_len = 32,
                      const std::string& text = kText) {
  return "dump -q -m " + model + " --tokenizer " + kTok + " --text " + text +
         " --doc-separator '<|endoftext|>' --threads 1 --n-seq " + std::to_string(n_seq) +
         " --seq-len " + std::to_string(seq_len) + " -o " + out + " " + extra;
}

// A perplexity config whose `models` / `texts` / extra keys the test chooses.
std::string ppl_yaml(const std::string& models, const std::string& texts,
                     const std::string& top = "") {
  return "kind: perplexity\n" + top + "models:" + models + "\ntexts:" + texts +
         "\nperplexity:\n  window: 64\n  max_tokens: 100\n";
}

}  // namespace

TEST_CASE("llama2.c headers whose sizes wrap or are huge fail before any allocation",
          "[hardening][loader]") {
  test::TempDir d("hard_l2c");
  SECTION("offsets that wrap around 2^64") {
    // 65536 layers x 8388608 x 8388608 x 4 bytes of wq alone is 2^16 * 2^23 * 2^23 * 2^2 =
    // 2^64: the sum no longer fits.
    test::write_bytes(d / "wrap.bin",
                      llama2c_header({8388608, 2796200, 65536, 4194304, 1, 131071, 2}, 16));
    const auto g = test::run_kvscope("generate -m " + (d / "wrap.bin").string() + " --tokenizer " +
                                     kTok + " -p Once -n 2");
    CHECK(g.exit_code == 1);
    CHECK(one_line(g.err));
    CHECK_THAT(g.err, Contains((d / "wrap.bin").string()) && Contains("file size 44 bytes") &&
                          Contains("needs more than 2^64 bytes"));
    const auto r = test::run_kvscope(dump_args((d / "wrap.bin").string(), (d / "w.h5").string()));
    CHECK(r.exit_code == 1);
    CHECK(listing(d.path) == std::vector<std::string>{"wrap.bin"});  // no .h5, no .partial
  }
  SECTION("8,388,609 layers are refused without allocating them") {
    test::write_bytes(d / "layers.bin", llama2c_header({64, 128, 8388609, 4, 4, 32, 16}, 16));
    // By hand: 28 + embedding 32*64*4 + per layer (2 norms 2*256, wq/wk/wv/wo 4*16384, w1/w2/w3
    // 3*32768 = 164352) * 8388609 + final norm 256 + freq_cis 16*8*2*4 = 1378684675868.
    // Under a 3 GB address-space limit: the old loader allocated ~9 GB of layer structs first.
    const auto r = test::run_kvscope_sh(
        test::memory_limit_3gb(),
        "generate -m " + (d / "layers.bin").string() + " --tokenizer " + kTok + " -p Once -n 2");
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("layers 8388609") && Contains("needs 1378684675868 bytes") &&
                          Contains("file size 44 bytes"));
  }
  SECTION("a field far beyond any real model is named") {
    test::write_bytes(d / "big.bin", llama2c_header({64, 128, 2, 4, 4, 32, 1 << 25}, 16));
    REQUIRE_THROWS_WITH(load_model(d / "big.bin"), Contains("big.bin") &&
                                                       Contains("seq_len = 33554432") &&
                                                       Contains("limit 16777215"));
  }
}

TEST_CASE("a safetensors shape whose product overflows is refused", "[hardening][loader]") {
  test::TempDir d("hard_st");
  SyntheticSpec spec = tiny_spec(1);
  write_synthetic_hf_model(d.path, spec);
  const fs::path f = d / "model.safetensors";
  std::string b = test::slurp(f);
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  nlohmann::json h = nlohmann::json::parse(b.substr(8, n));
  // 33554560 * 1099507433488 * 128 wraps around 2^64; each factor alone is below 2^40.
  h["model.norm.weight"]["shape"] = {33554560ull, 1099507433488ull, 128};
  const std::string hs = h.dump();
  const uint64_t m = hs.size();
  test::write_bytes(f, std::string(reinterpret_cast<const char*>(&m), 8) + hs + b.substr(8 + n));
  REQUIRE_THROWS_WITH(load_model(d.path), Contains(f.string()) && Contains("model.norm.weight") &&
                                              Contains("[33554560,1099507433488,128]") &&
                                              Contains("over 2^40"));
}

TEST_CASE("shard names in weight_map stay inside the model directory", "[hardening][loader]") {
  test::TempDir d("hard_shard");
  SyntheticSpec spec = tiny_spec(2);
  spec.n_shards = 2;
  write_synthetic_hf_model(d.path, spec);
  const fs::path idx = d / "model.safetensors.index.json";
  for (const std::string bad : {"../../etc/passwd", "/etc/passwd", "sub/../../x.safetensors"}) {
    nlohmann::json j = nlohmann::json::parse(test::slurp(idx));
    const std::string key = j["weight_map"].begin().key();
    j["weight_map"][key] = bad;
    test::write_bytes(idx, j.dump());
    INFO(bad);
    REQUIRE_THROWS_WITH(load_model(d.path), Contains(idx.string()) && Contains(key) &&
                                                Contains("'" + bad + "'") &&
                                                Contains("not a file inside the model directory"));
  }
}

TEST_CASE("token ids far beyond the vocabulary are refused", "[hardening][tokenizer]") {
  test::TempDir d("hard_tokid");
  const fs::path src = fs::path(KVSCOPE_TEST_FIXTURES_DIR) / "tokenizers/gpt2_bytelevel";
  nlohmann::json j = nlohmann::json::parse(test::slurp(src / "tokenizer.json"));
  const size_t n_vocab = j["model"]["vocab"].size(), n_added = j["added_tokens"].size();
  for (const int64_t id : {int64_t(99999999), int64_t(2147483000)}) {
    nlohmann::json k = j;
    k["model"]["vocab"]["zzz"] = id;
    test::write_bytes(d / "tokenizer.json", k.dump());
    INFO(id);
    // The limit is 2 x (tokens in the file) + 1024, with "zzz" among them.
    const int64_t limit = 2 * int64_t(n_vocab + 1 + n_added) + 1024;
    REQUIRE_THROWS_WITH(load_tokenizer(d / "tokenizer.json"),
                        Contains((d / "tokenizer.json").string()) && Contains("\"zzz\"") &&
                            Contains(std::to_string(id)) &&
                            Contains("below " + std::to_string(limit)));
  }
}

TEST_CASE("texts are read only as far as needed, and never without bound", "[hardening][text]") {
  TextSpec s;
  s.path = "/dev/zero";
  s.max_bytes = 1000;
  const auto docs = load_documents(s);
  REQUIRE(docs.size() == 1);
  CHECK(docs[0] == std::string(1000, '\0'));
  s.max_bytes = 0;
  s.read_limit = size_t(1) << 20;  // the 1 GiB default, scaled down for the test
  REQUIRE_THROWS_WITH(load_documents(s), Contains("/dev/zero") &&
                                             Contains("more than 1048576 bytes") &&
                                             Contains("set max_bytes or max_docs"));
  // A file with separators stops at max_docs even when more follows.
  test::TempDir d("hard_text");
  std::string big;
  for (int i = 0; i < 20000; ++i) big += "doc " + std::to_string(i) + "\n<|endoftext|>\n";
  test::write_bytes(d / "t.txt", big);
  TextSpec t;
  t.path = d / "t.txt";
  t.doc_separator = "<|endoftext|>";
  t.max_docs = 3;
  t.read_limit = 100000;  // below the file's ~360 kB: reading it whole would fail
  CHECK(load_documents(t) == std::vector<std::string>{"doc 0", "doc 1", "doc 2"});
  // The dump command reads /dev/zero for what its sequences need, then stops.
  const auto r = test::run_kvscope_sh(
      test::memory_limit_3gb(), "dump -q -m " + kModel + " --tokenizer " + kTok +
                                    " --text /dev/zero --n-seq 2 --seq-len 16 --threads 1 -o " +
                                    (d / "z.h5").string());
  CHECK(r.exit_code == 0);
  CHECK(fs::exists(d / "z.h5"));
  // Experiments hash their texts, so a device is refused up front.
  test::write_bytes(d / "c.yaml", ppl_yaml("\n  - path: " + kModel, "\n  - path: /dev/zero"));
  const auto z = test::run_kvscope(
      "run " + (d / "c.yaml").string() + " --results " + (d / "res").string(), d.path);
  CHECK(z.exit_code == 1);
  CHECK(one_line(z.err));
  CHECK_THAT(z.err, Contains("c.yaml:5") && Contains("'/dev/zero' is not a regular file"));
  CHECK(!fs::exists(d / "res"));
}

TEST_CASE("empty texts and empty model lists are errors, not results", "[hardening][config]") {
  test::TempDir d("hard_empty");
  test::write_bytes(d / "empty.txt", "");
  test::write_bytes(d / "nl.txt", "\n\n<|endoftext|>\n\n");
  const std::string res = (d / "res").string();
  SECTION("an empty file") {
    test::write_bytes(d / "c.yaml", ppl_yaml("\n  - path: " + kModel,
                                             "\n  - path: " + (d / "empty.txt").string()));
    const auto r = test::run_kvscope("run -q " + (d / "c.yaml").string() + " --results " + res);
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("empty.txt") && Contains("gives no documents"));
  }
  SECTION("a file of separators only") {
    test::write_bytes(d / "c.yaml", ppl_yaml("\n  - path: " + kModel,
                                             "\n  - path: " + (d / "nl.txt").string() +
                                                 "\n    doc_separator: '<|endoftext|>'"));
    const auto r = test::run_kvscope("run -q " + (d / "c.yaml").string() + " --results " + res);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("nl.txt") && Contains("gives no documents"));
  }
  SECTION("models: [] and texts: []") {
    test::write_bytes(d / "c.yaml", ppl_yaml(" []", "\n  - path: " + kText));
    auto r = test::run_kvscope("run -q " + (d / "c.yaml").string() + " --results " + res);
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("c.yaml:2") && Contains("'models' is an empty list"));
    test::write_bytes(d / "c.yaml", ppl_yaml("\n  - path: " + kModel, " []"));
    r = test::run_kvscope("run -q " + (d / "c.yaml").string() + " --results " + res);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("c.yaml:4") && Contains("'texts' is an empty list"));
  }
  CHECK(!fs::exists(d / "res/c"));
  CHECK(!fs::exists(d / "res/c.partial"));
}

TEST_CASE("non-finite weights are refused at load, naming the tensor", "[hardening][loader]") {
  test::TempDir d("hard_nan");
  std::string b = test::slurp(kModel);
  // stories260K: dim 64, 5 layers, vocab 512. wq[2] starts after the header (28), the
  // embedding (512*64*4 = 131072), rms_att (5*64*4 = 1280) and wq[0..1] (2*64*64*4 = 32768):
  // 165148. Element [3, 5] is (3*64 + 5)*4 = 788 bytes further.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(b.data() + 165148 + 788, &nan, 4);
  test::write_bytes(d / "nan.bin", b);
  const auto r = test::run_kvscope("generate -m " + (d / "nan.bin").string() + " --tokenizer " +
                                   kTok + " -p Once -n 2");
  CHECK(r.exit_code == 1);
  CHECK(one_line(r.err));
  CHECK_THAT(r.err, Contains("nan.bin") && Contains("'wq[2]'") && Contains("NaN at [3, 5]"));
  // An Inf in a BF16 Hugging Face tensor: 0x7f80 is +Inf in bfloat16.
  SyntheticSpec spec = tiny_spec(1);
  spec.dtype = DType::BF16;
  write_synthetic_hf_model(d / "hf", spec);
  const fs::path f = d / "hf/model.safetensors";
  std::string s = test::slurp(f);
  uint64_t n = 0;
  std::memcpy(&n, s.data(), 8);
  const auto h = nlohmann::json::parse(s.substr(8, n));
  const uint64_t at = h["model.norm.weight"]["data_offsets"][0].get<uint64_t>();
  s[8 + n + at + 2 * 7] = char(0x80);  // element 7, little-endian 0x7f80
  s[8 + n + at + 2 * 7 + 1] = char(0x7f);
  test::write_bytes(f, s);
  REQUIRE_THROWS_WITH(load_model(d / "hf"),
                      Contains("'model.norm.weight'") && Contains("+Inf at [0, 7]"));
}

TEST_CASE("dumps beyond the trained context need --allow-extrapolation", "[hardening][dump]") {
  test::TempDir d("hard_ctx");
  const std::string out = (d / "x.h5").string();
  auto r = test::run_kvscope("dump -q -m " + kModel + " --text " + kText +
                             " --n-seq 1 --seq-len 600 --threads 1 -o " + out);
  CHECK(r.exit_code == 1);
  CHECK(one_line(r.err));
  // stories260K was trained with a context of 512 (its llama2.c header).
  CHECK_THAT(r.err, Contains(out) && Contains("seq_len 600 exceeds the context of 512") &&
                        Contains("--allow-extrapolation"));
  CHECK(listing(d.path).empty());
  r = test::run_kvscope("dump -q -m " + kModel + " --text " + kText +
                        " --n-seq 1 --seq-len 600 --threads 1 --allow-extrapolation -o " + out);
  CHECK(r.exit_code == 0);
  CHECK(fs::exists(out));
}

TEST_CASE("thread counts are bounded", "[hardening][config]") {
  test::TempDir d("hard_threads");
  test::write_bytes(d / "c.yaml",
                    ppl_yaml("\n  - path: " + kModel, "\n  - path: " + kText, "threads: 100000\n"));
  const auto r =
      test::run_kvscope("run -q " + (d / "c.yaml").string() + " --results " + (d / "res").string());
  CHECK(r.exit_code == 1);
  CHECK(one_line(r.err));
  CHECK_THAT(r.err, Contains("c.yaml:2") && Contains("'threads' = 100000") &&
                        Contains("at most " + std::to_string(max_threads())));
  CHECK(!fs::exists(d / "res"));
  const auto g = test::run_kvscope("generate -m " + kModel + " -p Once --threads 100000");
  CHECK(g.exit_code == 1);
  CHECK_THAT(g.err, Contains("threads = 100000"));
  CHECK(max_threads() >= 8);
}

TEST_CASE("usage errors exit 1 with one line", "[hardening][cli]") {
  for (const char* args : {"dump --bogus", "run", "generate -m", "frobnicate", "dump --gzip 12",
                           "plot spectrum /nonexistent.csv"}) {
    const auto r = test::run_kvscope(args);
    INFO(args);
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains("kvscope: error: "));
  }
  CHECK(test::run_kvscope("--version").exit_code == 0);
  CHECK(test::run_kvscope("dump --help").exit_code == 0);
}

TEST_CASE("HDF5 and filesystem failures are one line naming the file", "[hardening][dump]") {
  test::TempDir d("hard_h5");
  SECTION("a full disk (a file-size limit stands in for it)") {
    // SIGXFSZ ignored, so writes past the limit fail with EFBIG as on a full disk.
    const std::string out = (d / "big.h5").string();
    const auto r =
        test::run_kvscope_sh("trap '' XFSZ; ulimit -f 64; ", dump_args(kModel, out, "", 8, 256));
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains(out) && Contains("File too large (errno 27)"));
    CHECK(r.err.find("bytes actually written") == std::string::npos);
    CHECK(listing(d.path).empty());
  }
  SECTION("a missing output directory") {
    const std::string out = (d / "no/such/dir/x.h5").string();
    const auto r = test::run_kvscope(dump_args(kModel, out));
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains((d / "no/such/dir").string()) && Contains("does not exist"));
  }
  SECTION("an existing directory as output, even with --force") {
    fs::create_directories(d / "adir");
    const auto r = test::run_kvscope(dump_args(kModel, (d / "adir").string(), "--force"));
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains((d / "adir").string()) && Contains("is a directory"));
    CHECK(r.err.find("Success") == std::string::npos);
    CHECK(fs::is_directory(d / "adir"));
  }
  SECTION("too short a text names it") {
    const std::string out = (d / "x.h5").string();
    const auto r = test::run_kvscope(dump_args(kModel, out, "--max-docs 1", 50));
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains(kText) && Contains("gives only") && Contains("50 were asked for"));
    CHECK(listing(d.path).empty());
  }
  SECTION("symlink loops and over-long names") {
    fs::create_symlink(d / "loop", d / "loop");
    auto r = test::run_kvscope("generate -m " + (d / "loop").string() + " -p Once");
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains((d / "loop").string()) && Contains("symbolic links"));
    r = test::run_kvscope(
        dump_args(kModel, (d / "x.h5").string(), "", 2, 32, (d / "loop").string()));
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains((d / "loop").string()) && Contains("symbolic links"));
    const std::string longname = (d / std::string(300, 'a')).string();
    r = test::run_kvscope("generate -m " + longname + " -p Once");
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err));
    CHECK_THAT(r.err, Contains(longname) && Contains("File name too long"));
  }
}

TEST_CASE("forward names the model when a token id is outside its vocabulary",
          "[hardening][forward]") {
  const Model m = load_model(kModel);
  RunState st(m.config, 4);
  const std::vector<int32_t> toks = {1, 600};
  REQUIRE_THROWS_WITH(forward(m, st, toks, ForwardOptions{}),
                      Contains("stories260K.bin") && Contains("token id 600 at position 1") &&
                          Contains("expected 0..511"));
}

TEST_CASE("dump_kv configs are checked before any model loads", "[hardening][config]") {
  test::TempDir d("hard_dumpcfg");
  // The model path does not exist: an error about it would mean the keys came second.
  auto cfg = [&](const std::string& section) {
    test::write_bytes(d / "c.yaml", "kind: dump_kv\nmodels:\n  - path: " + (d / "no.bin").string() +
                                        "\ntexts:\n  - path: " + kText + "\ndump_kv:\n" + section);
    return test::run_kvscope("run -q " + (d / "c.yaml").string() + " --results " +
                             (d / "res").string());
  };
  auto r = cfg("  tensors: [k, bogus]\n");
  CHECK(r.exit_code == 1);
  CHECK(one_line(r.err));
  CHECK_THAT(r.err, Contains("c.yaml:7") && Contains("'bogus' is not a tensor kvscope dumps") &&
                        Contains("known: k_pre_rope"));
  r = cfg("  gzip: 10\n");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("c.yaml:7") && Contains("0..9, got 10"));
  r = cfg("  tensors: [v, v]\n");
  CHECK_THAT(r.err, Contains("c.yaml:7") && Contains("lists 'v' twice"));
  CHECK(r.err.find("partial") == std::string::npos);
  CHECK(!fs::exists(d / "res"));
}

TEST_CASE("interrupted dumps leave no partial file; stale ones are cleared", "[hardening][dump]") {
  test::TempDir d("hard_partial");
  const std::string out = (d / "x.h5").string();
  SECTION("SIGTERM half-way") {
    // 600 sequences of 512 tokens of Emma at deflate level 9 take a minute on one thread.
    const auto r = test::run_kvscope_sh(
        "timeout -s TERM 1 ",
        dump_args(kModel, out, "--gzip 9", 600, 512, kData + "/text/janeausten/emma.txt"));
    CHECK(r.exit_code == 124);
    CHECK(listing(d.path).empty());
  }
  SECTION("a partial file from a killed run is deleted by the next dump") {
    test::write_bytes(out + ".partial", std::string(1000, 'x'));
    const auto r = test::run_kvscope(dump_args(kModel, out));
    CHECK(r.exit_code == 0);
    CHECK(listing(d.path) == std::vector<std::string>{"x.h5"});
  }
}

TEST_CASE("config paths the OS cannot stat are config errors, not crashes", "[hardening][config]") {
  // Found by fuzz_config: an over-long model path made std::filesystem throw its own
  // exception type out of the config checks.
  test::TempDir d("hard_cfgpath");
  const std::string longname = (d / std::string(300, 'b')).string();
  test::write_bytes(d / "c.yaml", ppl_yaml("\n  - path: " + longname, "\n  - path: " + kText));
  REQUIRE_THROWS_WITH(read_config(d / "c.yaml"), Contains((d / "c.yaml").string()) &&
                                                     Contains(longname) &&
                                                     Contains("File name too long"));
  fs::create_symlink(d / "loop", d / "loop");
  test::write_bytes(d / "c.yaml",
                    ppl_yaml("\n  - path: " + kModel, "\n  - path: " + (d / "loop").string()));
  const auto r =
      test::run_kvscope("run -q " + (d / "c.yaml").string() + " --results " + (d / "res").string());
  CHECK(r.exit_code == 1);
  CHECK(one_line(r.err));
  CHECK_THAT(r.err,
             Contains("c.yaml") && Contains((d / "loop").string()) && Contains("symbolic links"));
}
