// K/V dumps: bit-exact round trip of every captured tensor of every layer of every
// shipped model, K = RoPE(k_pre_rope) recomputed independently, K/V against the naive
// reference, f16/gzip/chunked variants, sequence planning, and safe files.
#include <hdf5.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "kvscope/io/text_source.hpp"
#include "kvscope/kv/kv_dump.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "reference_model.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

// The float16 value nearest to x (ties to even): GCC's _Float16 where it exists, else a
// rounding written here in double precision, independent of kvscope's f32_to_f16.
float nearest_half(float x) {
#if defined(__FLT16_MAX__) && !defined(__clang__)
  return float(static_cast<_Float16>(x));
#else
  if (std::isnan(x) || std::isinf(x)) return x;
  const double a = std::fabs(double(x));
  if (a == 0) return x;
  const int e = std::max(std::ilogb(a), -14);  // subnormals share 2^-14's spacing
  const double ulp = std::ldexp(1.0, e - 10);
  const double r = std::nearbyint(a / ulp) * ulp;  // default rounding: to nearest even
  const double v = r >= 65520.0 ? HUGE_VAL : r;
  return float(std::copysign(v, double(x)));
#endif
}

const std::string kData = KVSCOPE_TEST_DATA_DIR;
const char* kModels[] = {"models/stories260K/stories260K.bin", "models/tinystories656K",
                         "models/babyllama105/model5000.bin"};

struct Loaded {
  Model model;
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> stream;
  DumpSource src;
};

Loaded load(const std::string& rel) {
  Loaded l;
  const fs::path p = kData + "/" + rel;
  l.model = load_model(p);
  l.tok = load_tokenizer(find_tokenizer_for(p));
  TextSpec ts;
  ts.path = kData + "/text/tinystories/tinystories_valid_head.txt";
  ts.doc_separator = "<|endoftext|>";
  ts.max_docs = 40;
  l.stream = token_stream(*l.tok, load_documents(ts));
  l.src = {
      l.model.name, l.model.files, find_tokenizer_for(p), l.tok->kind(), ts.path, "plain", {}, {}};
  return l;
}

// The sequences a dump holds, rebuilt from the documented rule.
std::vector<std::vector<int32_t>> sequences(const Loaded& l, int T, int N) {
  std::vector<std::vector<int32_t>> out;
  for (size_t off : plan_sequences(l.stream, T, N, l.tok->bos_id)) {
    std::vector<int32_t> s;
    if (l.stream[off] != l.tok->bos_id) s.push_back(l.tok->bos_id);
    while (int(s.size()) < T) s.push_back(l.stream[off++]);
    out.push_back(s);
  }
  return out;
}

// Every tensor of every layer for one forward pass, head-major, as the forward pass gave it.
struct Capture : ForwardObserver {
  std::vector<std::map<std::string, std::vector<float>>> layers;
  void on_layer(const LayerCapture& c) override {
    if (layers.size() <= size_t(c.layer)) layers.resize(size_t(c.layer) + 1);
    auto& L = layers[size_t(c.layer)];
    const size_t kv = size_t(c.n_kv_heads) * c.n_tokens * c.head_dim;
    const size_t qn = size_t(c.n_heads) * c.n_tokens * c.head_dim;
    L["k_pre_rope"].assign(c.k_pre_rope, c.k_pre_rope + kv);
    L["k"].assign(c.k, c.k + kv);
    L["v"].assign(c.v, c.v + kv);
    L["q"].assign(c.q, c.q + qn);
    std::vector<float>& a = L["attn_out"];
    a.resize(qn);
    for (int t = 0; t < c.n_tokens; ++t)
      for (int h = 0; h < c.n_heads; ++h)
        std::memcpy(a.data() + (size_t(h) * c.n_tokens + t) * c.head_dim,
                    c.attn_out + (size_t(t) * c.n_heads + h) * c.head_dim,
                    sizeof(float) * size_t(c.head_dim));
  }
};

DumpOptions all_tensors(int T, int N) {
  DumpOptions o;
  o.seq_len = T;
  o.n_seq = N;
  o.tensors = dump_tensor_names();
  o.logits = true;
  return o;
}

}  // namespace

TEST_CASE("dump round trip is bit-exact for every tensor and layer of every shipped model",
          "[dump][model]") {
  test::TempDir tmp("dump_rt");
  for (const char* rel : kModels) {
    INFO(rel);
    const Loaded l = load(rel);
    const int T = 64, N = 3;
    const fs::path out = tmp / "d.h5";
    dump_kv(l.model, *l.tok, l.stream, all_tensors(T, N), l.src, out);
    KVDumpReader r(out);
    const DumpInfo& in = r.info();
    CHECK(in.n_seq == N);
    CHECK(in.seq_len == T);
    CHECK(in.model_name == l.model.name);
    CHECK(in.config.n_kv_heads == l.model.config.n_kv_heads);
    CHECK(in.tensors == dump_tensor_names());
    const auto seqs = sequences(l, T, N);
    const std::vector<int32_t> toks = r.tokens(0, N);
    const int hd = l.model.config.head_dim;
    std::vector<float> got(size_t(T) * hd);
    for (int s = 0; s < N; ++s) {
      REQUIRE(std::equal(seqs[size_t(s)].begin(), seqs[size_t(s)].end(), toks.begin() + s * T));
      Capture cap;
      RunState st(l.model.config, T);
      ForwardOptions fo;
      fo.observer = &cap;
      const auto logits = forward(l.model, st, seqs[size_t(s)], fo);
      const std::vector<float> lg = r.logits(s);
      CHECK(std::memcmp(lg.data(), logits.data(), lg.size() * 4) == 0);
      for (int layer = 0; layer < l.model.config.n_layers; ++layer)
        for (const std::string& t : dump_tensor_names())
          for (int h = 0; h < in.heads_of(t); ++h) {
            r.read_head(layer, t, h, s, 1, got.data());
            const float* want = cap.layers[size_t(layer)][t].data() + size_t(h) * T * hd;
            INFO("seq " << s << " layer " << layer << " " << t << " head " << h);
            CHECK(std::memcmp(got.data(), want, got.size() * 4) == 0);
          }
    }
    fs::remove(out);
  }
}

TEST_CASE("dumped K is RoPE of dumped K before RoPE, for both layouts", "[dump][model]") {
  test::TempDir tmp("dump_rope");
  for (const char* rel : {kModels[0], kModels[1]}) {  // adjacent pairs, rotate-half
    const Loaded l = load(rel);
    const int T = 96, N = 2;
    dump_kv(l.model, *l.tok, l.stream, all_tensors(T, N), l.src, tmp / "d.h5");
    KVDumpReader r(tmp / "d.h5");
    const ModelConfig& c = r.info().config;
    INFO(rel << " layout " << rope_layout_name(c.rope_layout));
    std::vector<float> pre(size_t(N) * T * c.head_dim), post(pre.size());
    for (int layer = 0; layer < c.n_layers; ++layer)
      for (int h = 0; h < c.n_kv_heads; ++h) {
        r.read_head(layer, "k_pre_rope", h, 0, N, pre.data());
        r.read_head(layer, "k", h, 0, N, post.data());
        std::vector<double> want(pre.begin(), pre.end());
        for (int s = 0; s < N; ++s)
          for (int t = 0; t < T; ++t)
            test::rope_ref(&want[(size_t(s) * T + t) * c.head_dim], c.head_dim, t, c.rope_theta,
                           c.rope_layout);
        CHECK(test::rel_error(post.data(), want.data(), want.size()) < 1e-6);
      }
    fs::remove(tmp / "d.h5");
  }
}

TEST_CASE("dumped K and V match the naive reference model", "[dump][model]") {
  test::TempDir tmp("dump_ref");
  for (const char* rel : kModels) {
    const Loaded l = load(rel);
    const int T = 48;
    dump_kv(l.model, *l.tok, l.stream, all_tensors(T, 1), l.src, tmp / "d.h5");
    KVDumpReader r(tmp / "d.h5");
    const test::ReferenceRun ref = test::reference_forward(l.model, r.tokens(0, 1));
    const ModelConfig& c = l.model.config;
    std::vector<float> got(size_t(c.n_kv_heads) * T * c.head_dim);
    for (int layer = 0; layer < c.n_layers; ++layer) {
      INFO(rel << " layer " << layer);
      for (int h = 0; h < c.n_kv_heads; ++h)
        r.read_head(layer, "k", h, 0, 1, got.data() + size_t(h) * T * c.head_dim);
      CHECK(test::rel_error(got.data(), ref.k[size_t(layer)].data(), got.size()) < 1e-4);
      for (int h = 0; h < c.n_kv_heads; ++h)
        r.read_head(layer, "v", h, 0, 1, got.data() + size_t(h) * T * c.head_dim);
      CHECK(test::rel_error(got.data(), ref.v[size_t(layer)].data(), got.size()) < 1e-4);
    }
    fs::remove(tmp / "d.h5");
  }
}

TEST_CASE("f16, gzip and multi-sequence chunks store the same numbers", "[dump][model]") {
  test::TempDir tmp("dump_var");
  const Loaded l = load(kModels[1]);
  const int T = 64, N = 5;
  DumpOptions plain = all_tensors(T, N);
  dump_kv(l.model, *l.tok, l.stream, plain, l.src, tmp / "plain.h5");
  DumpOptions packed = plain;
  packed.gzip = 4;
  packed.chunk_seqs = 2;  // N = 5 leaves a partial last chunk
  packed.chunk_heads = 3;
  dump_kv(l.model, *l.tok, l.stream, packed, l.src, tmp / "packed.h5");
  DumpOptions half = packed;
  half.dtype = DType::F16;
  dump_kv(l.model, *l.tok, l.stream, half, l.src, tmp / "half.h5");
  CHECK(fs::file_size(tmp / "packed.h5") < fs::file_size(tmp / "plain.h5"));
  CHECK(fs::file_size(tmp / "half.h5") < fs::file_size(tmp / "packed.h5"));
  KVDumpReader a(tmp / "plain.h5"), b(tmp / "packed.h5"), c(tmp / "half.h5");
  CHECK(c.info().dtype == "f16");
  const int hd = l.model.config.head_dim;
  std::vector<float> x(size_t(N) * T * hd), y(x.size()), z(x.size());
  for (int layer = 0; layer < 2; ++layer)
    for (const char* t : {"k", "v", "q"})
      for (int h = 0; h < a.info().heads_of(t); ++h) {
        a.read_head(layer, t, h, 0, N, x.data());
        b.read_head(layer, t, h, 0, N, y.data());
        c.read_head(layer, t, h, 0, N, z.data());
        CHECK(x == y);
        bool half_ok = true;  // f16 = the f32 value rounded to nearest half
        for (size_t i = 0; i < x.size(); ++i) half_ok &= z[i] == nearest_half(x[i]);
        CHECK(half_ok);
      }
  // for_each_block visits the sequences in order, in blocks of at most `block`.
  std::vector<int> seen;
  b.for_each_block(0, "k", 1, 2, [&](int s0, int n, const float* d) {
    seen.push_back(s0);
    seen.push_back(n);
    a.read_head(0, "k", 1, s0, n, x.data());
    CHECK(std::memcmp(d, x.data(), size_t(n) * T * hd * 4) == 0);
  });
  CHECK(seen == std::vector<int>{0, 2, 2, 2, 4, 1});
}

TEST_CASE("sequences are consecutive BOS-led windows (hand-counted)", "[dump]") {
  // BOS = 1 at positions 0 and 4. seq_len 4: window 0 starts at a BOS and takes 4 tokens
  // [1 a b c]; window 1 starts at the next BOS (offset 4) and takes [1 d e f]; window 2
  // would start at offset 8 with an invented BOS and need 3 tokens, but only 2 are left.
  const std::vector<int32_t> s = {1, 10, 11, 12, 1, 13, 14, 15, 16, 17};
  CHECK(plan_sequences(s, 4, 2, 1) == std::vector<size_t>{0, 4});
  CHECK_THROWS_WITH(plan_sequences(s, 4, 3, 1),
                    Contains("only 2 sequences of 4 tokens (10 tokens in all), 3 were asked for"));
  // seq_len 3 fits three windows: [1 a b] at 0, [1 c 1]? no: offset 3 is not a BOS, so
  // [BOS] + s[3, 5) = [1 12 1], then offset 5: [1] + s[5, 7) = [1 13 14].
  CHECK(plan_sequences(s, 3, 3, 1) == std::vector<size_t>{0, 3, 5});
}

TEST_CASE("dump files are safe: no overwrite, no partial results, clear HDF5 errors",
          "[dump][cli][model]") {
  test::TempDir tmp("dump_safe");
  const Loaded l = load(kModels[0]);
  const fs::path out = tmp / "d.h5";
  DumpOptions o = all_tensors(32, 2);
  dump_kv(l.model, *l.tok, l.stream, o, l.src, out);
  const auto size = fs::file_size(out);
  CHECK_THROWS_WITH(dump_kv(l.model, *l.tok, l.stream, o, l.src, out),
                    Contains(out.string()) && Contains("--force"));
  CHECK(fs::file_size(out) == size);
  o.force = true;
  o.n_seq = 3;
  dump_kv(l.model, *l.tok, l.stream, o, l.src, out);
  CHECK(KVDumpReader(out).info().n_seq == 3);

  const std::string model = test::stories260k();
  const std::string text = kData + "/text/tinyshakespeare.txt";
  SECTION("a write failure (file size limit, as on a full disk) leaves nothing") {
    // dash counts ulimit -f in 512-byte blocks: 64 blocks = 32 KB, far below the dump.
    const auto r =
        test::run_kvscope_sh("trap '' XFSZ; ulimit -f 64; ",
                             "dump -m " + model + " --text " + text +
                                 " --seq-len 256 --n-seq 8 -o " + (tmp / "full.h5").string());
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("full.h5") && Contains("failed"));
    CHECK(!fs::exists(tmp / "full.h5"));
    CHECK(!fs::exists(tmp / "full.h5.partial"));
  }
  SECTION("a killed dump leaves no finished-looking file") {
    // 700 x 512 tokens of Shakespeare (the text holds ~780 such windows) take ~20 s:
    // SIGKILL after 3 s lands mid-dump. Exit 137 is timeout's report of the kill.
    const auto r = test::run_kvscope_sh(
        "timeout -s KILL 3 ", "dump -m " + model + " --text " + text +
                                  " --seq-len 512 --n-seq 700 -o " + (tmp / "killed.h5").string());
    INFO(r.err);
    CHECK(r.exit_code == 137);
    CHECK(!fs::exists(tmp / "killed.h5"));
  }
  SECTION("the reader names what is wrong") {
    CHECK_THROWS_WITH(KVDumpReader(tmp / "none.h5"), Contains("none.h5") && Contains("no such"));
    test::write_bytes(tmp / "text.h5", "not hdf5");
    CHECK_THROWS_WITH(KVDumpReader(tmp / "text.h5"), Contains("not an HDF5 file"));
    fs::copy_file(out, tmp / "cut.h5");
    const hid_t f = H5Fopen((tmp / "cut.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    H5Ldelete(f, "layer_01/v", H5P_DEFAULT);
    H5Fclose(f);
    CHECK_THROWS_WITH(KVDumpReader(tmp / "cut.h5"),
                      Contains("cut.h5") && Contains("tensor 'v' is missing from layer 1"));
    KVDumpReader r(out);
    CHECK_THROWS_WITH(r.read_head(0, "k", 4, 0, 1, nullptr),
                      Contains("head 4 of 'k' out of range"));
  }
}

TEST_CASE("h5dump -H shows the documented schema", "[dump][docs][model]") {
  if (std::system("h5dump --version >/dev/null 2>&1") != 0) {
    WARN("h5dump (hdf5-tools) is not installed: schema not checked");
    return;
  }
  test::TempDir tmp("dump_h5dump");
  const Loaded l = load(kModels[0]);  // 5 layers, 8 heads, 4 KV heads, head_dim 8
  dump_kv(l.model, *l.tok, l.stream, all_tensors(32, 2), l.src, tmp / "d.h5");
  const std::string cmd =
      "h5dump -H '" + (tmp / "d.h5").string() + "' > '" + (tmp / "h.txt").string() + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string h = test::slurp(tmp / "h.txt");
  // Every attribute the docs' root-attribute table names is in the file.
  const std::string doc = test::slurp(fs::path(KVSCOPE_SOURCE_DIR) / "docs/hdf5-schema.md");
  const size_t t0 = doc.find("## Root attributes"), t1 = doc.find("## Reading it");
  REQUIRE(t0 != std::string::npos);
  REQUIRE(t1 != std::string::npos);
  int named = 0;
  std::istringstream rows(doc.substr(t0, t1 - t0));
  for (std::string line; std::getline(rows, line);) {
    if (line.rfind("| `", 0) != 0) continue;
    const std::string first = line.substr(2, line.find(" |", 2) - 2);  // "`a`, `b`"
    for (size_t p = first.find('`'); p != std::string::npos; p = first.find('`', p + 1)) {
      const size_t q = first.find('`', p + 1);
      const std::string name = first.substr(p + 1, q - p - 1);
      INFO("attribute " << name);
      CHECK_THAT(h, Contains("ATTRIBUTE \"" + name + "\""));
      ++named;
      p = q;
    }
  }
  CHECK(named >= 25);
  // Datasets and shapes as documented: [n_seq, heads, seq_len, head_dim].
  CHECK_THAT(h, Contains("DATASET \"tokens\"") && Contains("DATASET \"sources\"") &&
                    Contains("DATASET \"logits\"") && Contains("GROUP \"layer_04\""));
  CHECK_THAT(h, Contains("DATASET \"k_pre_rope\"") && Contains("( 2, 4, 32, 8 )") &&
                    Contains("( 2, 8, 32, 8 )") && Contains("( 2, 32, 512 )"));
}

TEST_CASE("dumps from JSON lines record where each sequence comes from", "[dump][model]") {
  test::TempDir tmp("dump_jsonl");
  const fs::path mp = kData + "/models/tinystories656K";
  const Model m = load_model(mp);
  const auto tok = load_tokenizer(find_tokenizer_for(mp));
  TextSpec ts;
  ts.path = kData + "/text/c4/c4_sample.jsonl";
  ts.format = TextSpec::Jsonl;
  ts.max_docs = 30;
  const std::vector<std::string> docs = load_documents(ts);
  const std::vector<int32_t> stream = token_stream(*tok, docs);
  const DumpSource src{m.name, m.files, find_tokenizer_for(mp), tok->kind(), ts.path, "jsonl",
                       {},     {}};
  DumpOptions o;
  o.seq_len = 100;
  o.n_seq = 12;
  dump_kv(m, *tok, stream, o, src, tmp / "c4.h5");
  const auto sources = KVDumpReader(tmp / "c4.h5").sources();
  REQUIRE(sources.size() == 12);
  // Document d starts at the stream position of its BOS: the sum of the lengths of the
  // documents before it, each BOS + its own encoding.
  std::vector<int64_t> doc_start;
  int64_t pos = 0;
  for (const std::string& d : docs) {
    doc_start.push_back(pos);
    pos += 1 + int64_t(tok->encode(d).size());
  }
  for (size_t i = 0; i < sources.size(); ++i) {
    INFO("sequence " << i);
    CHECK(sources[i].file == ts.path.string());
    const int64_t off = sources[i].token_offset;
    const int64_t d = sources[i].document;
    REQUIRE(d >= 0);
    REQUIRE(size_t(d) < docs.size());
    CHECK(doc_start[size_t(d)] <= off);
    CHECK((size_t(d) + 1 == docs.size() || off < doc_start[size_t(d) + 1]));
  }
}
