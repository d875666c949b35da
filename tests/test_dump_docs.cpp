// What a notebook user meets first in a dump: the documented command and Python snippet
// (run exactly as docs/hdf5-schema.md prints them), token strings in /vocab, string
// attributes that h5py returns as str, and /sources pointing at each sequence's first
// text token.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <sstream>

#include "kvscope/io/hdf5_util.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/kv/kv_dump.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

bool have_h5py() {
  return std::system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") == 0;
}

// The fenced block of `lang` that follows `marker` in `doc`.
std::string block_after(const std::string& doc, const std::string& marker,
                        const std::string& lang) {
  const size_t mark = doc.find(marker);
  REQUIRE(mark != std::string::npos);
  const std::string fence = "```" + lang + "\n";
  const size_t b = doc.find(fence, mark);
  REQUIRE(b != std::string::npos);
  const size_t e = doc.find("```", b + fence.size());
  REQUIRE(e != std::string::npos);
  return doc.substr(b + fence.size(), e - b - fence.size());
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
}

std::string run_python(const fs::path& dir, const std::string& code) {
  test::write_bytes(dir / "snippet.py", code);
  const std::string cmd =
      "cd '" + dir.string() + "' && /usr/bin/python3 snippet.py > out.txt 2>&1; echo $? > rc.txt";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string out = test::slurp(dir / "out.txt");
  INFO(out);
  REQUIRE(test::slurp(dir / "rc.txt") == "0\n");
  return out;
}

// A small dump of stories260K written by the library, for the property tests.
struct SmallDump {
  LoadedModel lm;
  std::vector<std::string> docs;
  std::vector<int32_t> stream;
  fs::path file;
};

SmallDump small_dump(const fs::path& dir, const std::string& model, const TextSpec& ts, int T,
                     int N) {
  SmallDump d;
  d.lm = load_model_and_tokenizer(kData + "/" + model);
  d.docs = load_documents(ts);
  d.stream = token_stream(*d.lm.tokenizer, d.docs);
  d.file = dir / "d.h5";
  DumpOptions o;
  o.seq_len = T;
  o.n_seq = N;
  const DumpSource src{d.lm.model.name,
                       d.lm.model.files,
                       d.lm.tokenizer_path,
                       d.lm.tokenizer->kind(),
                       ts.path,
                       "plain",
                       {},
                       {}};
  dump_kv(d.lm.model, *d.lm.tokenizer, d.stream, o, src, d.file);
  return d;
}

}  // namespace

TEST_CASE("docs/hdf5-schema.md: its Python snippet reads what its dump command writes",
          "[dump][docs][model]") {
  if (!have_h5py()) {
    WARN("python3 with h5py and numpy is not installed: snippet not run");
    return;
  }
  const std::string doc = test::slurp(fs::path(KVSCOPE_SOURCE_DIR) / "docs/hdf5-schema.md");
  std::string cmd = block_after(doc, "<!-- snippet:dump -->", "sh");
  std::string py = block_after(doc, "<!-- snippet:python -->", "python");
  // The first shell command of the block (with its continuation lines), run as printed but
  // with the binary under test and the output moved into a scratch directory.
  cmd = cmd.substr(0, cmd.find('\n', cmd.find("--out")));
  replace_all(cmd, "\\\n", " ");
  std::smatch m;
  REQUIRE(std::regex_search(cmd, m, std::regex(R"(--out (\S+))")));
  const std::string out_path = m[1];
  // The property under test: the snippet opens the very file the command writes.
  REQUIRE_THAT(py, Contains("\"" + out_path + "\""));
  REQUIRE(cmd.rfind("build/kvscope dump ", 0) == 0);
  test::TempDir tmp("dump_docs");
  const std::string scratch = (tmp / "doc.h5").string();
  replace_all(cmd, out_path, scratch);
  replace_all(py, out_path, scratch);
  const test::CliResult r =
      test::run_kvscope(cmd.substr(std::string("build/kvscope ").size()), KVSCOPE_SOURCE_DIR);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::string out = run_python(tmp.path, py);
  INFO(out);
  // --seq-len 256 --n-seq 16 on stories260K (5 layers, head_dim 8, llama2.c RoPE pairs).
  CHECK_THAT(
      out, Contains("stories260K 5 adjacent_pairs") && Contains("(16, 256, 8) float32 (16, 256)"));
  // The labels the snippet prints are the tokenizer's own pieces of the dumped ids, looked
  // up here through the C++ tokenizer instead of /vocab.
  const KVDumpReader rd(scratch);
  const auto tok = load_tokenizer(kData + "/models/stories260K/tok512.bin");
  const std::vector<int32_t> ids = rd.tokens(0, 1);
  std::string expect = "sequence 0 starts:";
  for (int i = 0; i < 6; ++i) expect += " " + tok->piece(ids[size_t(i)]);
  CHECK_THAT(out, Contains(expect));
}

TEST_CASE("dumps carry the vocabulary as strings, and string attributes read back as str",
          "[dump][model]") {
  test::TempDir tmp("dump_vocab");
  TextSpec ts;
  ts.path = kData + "/text/tinystories/tinystories_valid_head.txt";
  ts.doc_separator = "<|endoftext|>";
  ts.max_docs = 20;
  // A Hugging Face BPE tokenizer (Metaspace, byte fallback): its pieces are UTF-8 with '▁'.
  const SmallDump d = small_dump(tmp.path, "models/tinystories656K", ts, 64, 3);
  const KVDumpReader rd(d.file);
  const std::vector<std::string> vocab = rd.vocab();
  REQUIRE(vocab.size() == size_t(d.lm.tokenizer->vocab_size()));
  for (int32_t id = 0; id < d.lm.tokenizer->vocab_size(); ++id) {
    INFO("id " << id);
    CHECK(vocab[size_t(id)] == d.lm.tokenizer->piece(id));
  }
  // The labels of a stretch of text spell what the tokenizer decodes (the Metaspace rule by
  // hand: '\u2581' is a space), up to the first special token (which decodes to nothing).
  const std::vector<int32_t> ids = rd.tokens(0, 1);
  std::vector<int32_t> stretch;
  for (size_t i = 1; i < ids.size(); ++i) {
    const bool special = d.lm.tokenizer->decode(std::span(&ids[i], 1)).empty();
    if (special && !stretch.empty()) break;
    if (!special) stretch.push_back(ids[i]);
  }
  REQUIRE(stretch.size() >= 10);
  std::string joined;
  for (int32_t id : stretch) joined += vocab[size_t(id)];
  replace_all(joined, "\xE2\x96\x81", " ");
  const std::string decoded = d.lm.tokenizer->decode(stretch);
  INFO("joined: [" << joined << "]\ndecoded: [" << decoded << "]");
  REQUIRE(joined.find("<0x") == std::string::npos);
  CHECK((joined == decoded || joined == " " + decoded));
  if (!have_h5py()) {
    WARN("python3 with h5py is not installed: h5py types not checked");
    return;
  }
  const std::string out = run_python(tmp.path, R"py(
import h5py
with h5py.File("d.h5", "r") as f:
    objs = [f] + [f[n] for n in ("tokens", "sources", "vocab", "layer_00/k", "layer_01/v")]
    n = 0
    for o in objs:
        for k, v in o.attrs.items():
            assert not isinstance(v, bytes), (o.name, k, v)
            if isinstance(v, str):
                n += 1
    v = f["vocab"].asstr()[:]
    print("str attributes", n, "vocab", len(v), type(v[0]).__name__)
)py");
  CHECK_THAT(out, Contains("vocab 2048 str"));
  // 22 root string attributes, plus axes/description on datasets.
  CHECK_THAT(out, Contains("str attributes"));
  std::smatch m;
  REQUIRE(std::regex_search(out, m, std::regex(R"(str attributes (\d+))")));
  CHECK(std::stoi(m[1]) >= 22 + 5);
}

TEST_CASE("/sources: token_offset is each sequence's first text token, sequence 0 included",
          "[dump][model]") {
  test::TempDir tmp("dump_sources");
  TextSpec ts;
  ts.path = kData + "/text/tinystories/tinystories_valid_head.txt";
  ts.doc_separator = "<|endoftext|>";
  ts.max_docs = 40;
  const int T = 96, N = 12;
  const SmallDump d = small_dump(tmp.path, "models/stories260K/stories260K.bin", ts, T, N);
  const KVDumpReader rd(d.file);
  const auto sources = rd.sources();
  const int32_t bos = d.lm.tokenizer->bos_id;
  REQUIRE(bos >= 0);
  // Document starts from the documents themselves: BOS + encode(doc) each.
  std::vector<int64_t> doc_start;
  int64_t pos = 0;
  for (const std::string& doc : d.docs) {
    doc_start.push_back(pos);
    pos += 1 + int64_t(d.lm.tokenizer->encode(doc).size());
  }
  REQUIRE(pos == int64_t(d.stream.size()));
  for (int i = 0; i < N; ++i) {
    INFO("sequence " << i);
    const std::vector<int32_t> ids = rd.tokens(i, 1);
    REQUIRE(ids[0] == bos);
    const int64_t off = sources[size_t(i)].token_offset;
    REQUIRE(off >= 0);
    REQUIRE(off + T - 1 <= int64_t(d.stream.size()));
    // Token 1 of the sequence is the stream token at token_offset, and the rest follow.
    for (int t = 1; t < T; ++t) REQUIRE(ids[size_t(t)] == d.stream[size_t(off + t - 1)]);
    const int64_t doc = sources[size_t(i)].document;
    REQUIRE(doc >= 0);
    REQUIRE(size_t(doc) < d.docs.size());
    CHECK(doc_start[size_t(doc)] < off);  // after the document's BOS
    CHECK((size_t(doc) + 1 == d.docs.size() || off < doc_start[size_t(doc) + 1]));
  }
  CHECK(sources[0].token_offset == 1);  // the stream starts with document 0's BOS
}

TEST_CASE("escape_invalid_utf8 keeps valid UTF-8 and spells stray bytes as \\xNN", "[dump]") {
  CHECK(h5::escape_invalid_utf8("abc") == "abc");
  CHECK(h5::escape_invalid_utf8("\xE2\x96\x81the") == "\xE2\x96\x81the");    // U+2581
  CHECK(h5::escape_invalid_utf8("\xF0\x9F\x98\x80") == "\xF0\x9F\x98\x80");  // U+1F600
  CHECK(h5::escape_invalid_utf8("\xE2\x96") == "\\xE2\\x96");                // cut short
  CHECK(h5::escape_invalid_utf8("a\xFF"
                                "b") == "a\\xFFb");                     // never valid
  CHECK(h5::escape_invalid_utf8("\xC0\xAF") == "\\xC0\\xAF");           // overlong '/'
  CHECK(h5::escape_invalid_utf8("\xED\xA0\x80") == "\\xED\\xA0\\x80");  // surrogate
}
