// The command line as a user meets it: --help everywhere, and bad input (missing files,
// unknown keys, malformed YAML) gives one clear line on stderr, a non-zero exit and no
// results directory that looks finished.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kvscope/report/manifest.hpp"
#include "kvscope/report/table.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

// A small perplexity config in `dir`, with `extra` appended to the perplexity section:
// it lands on line 12 (kind, threads, models, path, texts, name, path, separator,
// perplexity, window, max_tokens, then extra).
fs::path small_config(const fs::path& dir, const std::string& text_path,
                      const std::string& extra = "") {
  const fs::path cfg = dir / "tiny.yaml";
  test::write_bytes(cfg,
                    "kind: perplexity\n"
                    "threads: 1\n"
                    "models:\n"
                    "  - path: " +
                        kData +
                        "/models/stories260K/stories260K.bin\n"
                        "texts:\n"
                        "  - name: valid\n"
                        "    path: " +
                        text_path +
                        "\n"
                        "    doc_separator: \"<|endoftext|>\"\n"
                        "perplexity:\n"
                        "  window: 128\n"
                        "  max_tokens: 300\n" +
                        extra);
  return cfg;
}

}  // namespace

TEST_CASE("every command answers --help", "[cli]") {
  for (const char* cmd : {"", "generate", "run", "tokenize"}) {
    const auto r = test::run_kvscope(std::string(cmd) + " --help");
    INFO(cmd);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Contains("Usage"));
  }
  CHECK(test::run_kvscope("frobnicate").exit_code != 0);
}

TEST_CASE("generate prints the continuation; bad models fail clearly", "[cli][model]") {
  auto r = test::run_kvscope("generate -m " + kData +
                             "/models/stories260K/stories260K.bin -n 20 --quiet");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("Once upon a time"));
  // The prompt is echoed before its continuation (--no-echo: the continuation alone).
  const std::string m260 = "generate -m " + kData + "/models/stories260K/stories260K.bin -n 8 -q ";
  r = test::run_kvscope(m260 + "-p 'Once upon a'");
  const test::CliResult bare = test::run_kvscope(m260 + "-p 'Once upon a' --no-echo");
  CHECK(r.out.rfind("Once upon a", 0) == 0);
  CHECK(bare.out.rfind("Once upon a", 0) == std::string::npos);
  CHECK(r.out == "Once upon a" + bare.out);
  // --help shows the defaults.
  CHECK_THAT(test::run_kvscope("generate --help").out, Contains("--max-tokens INT:>= 0=256"));
  r = test::run_kvscope("generate -m /nonexistent/model.bin");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("/nonexistent/model.bin") && Contains("does not exist"));
  const test::TempDir tmp("cli_trunc");
  const fs::path& d = tmp.path;
  fs::copy_file(kData + "/models/stories260K/tok512.bin", d / "tok512.bin");
  fs::copy_file(test::stories260k(), d / "m.bin");
  fs::resize_file(d / "m.bin", 500000);
  r = test::run_kvscope("generate -m " + (d / "m.bin").string());
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("m.bin") && Contains("file size 500000 bytes") &&
                        Contains("needs 1056540 bytes"));
  CHECK(r.out.empty());
}

TEST_CASE("run writes CSV and manifest; bad configs fail before any output", "[cli][model]") {
  const test::TempDir tmp("cli_run");
  const fs::path& d = tmp.path;
  const std::string valid = kData + "/text/tinystories/tinystories_valid_head.txt";

  SECTION("a good config") {
    const auto r = test::run_kvscope("run " + small_config(d, valid).string() + " --quiet", d);
    REQUIRE(r.exit_code == 0);
    const CsvData csv = read_csv(d / "results/tiny/perplexity.csv");
    REQUIRE(csv.rows.size() == 1);
    CHECK(csv.rows[0][csv.column("model")] == "stories260K");
    CHECK(csv.rows[0][csv.column("tokens_scored")] != "0");
    const RunManifest m = read_manifest(d / "results/tiny/manifest.json");
    CHECK(m.kind == "perplexity");
    CHECK(m.threads == 1);
    CHECK(m.inputs.size() == 3);  // model, tokenizer, text
    CHECK(!fs::exists(d / "results/tiny.partial"));
  }
  SECTION("--digits 17: every float as its exact double, recorded in the manifest") {
    const fs::path cfg = small_config(d, valid);
    REQUIRE(test::run_kvscope("run " + cfg.string() + " --quiet", d).exit_code == 0);
    const auto r =
        test::run_kvscope("run " + cfg.string() + " --quiet --digits 17 --results exact", d);
    REQUIRE(r.exit_code == 0);
    const CsvData nine = read_csv(d / "results/tiny/perplexity.csv");
    const CsvData exact = read_csv(d / "exact/tiny/perplexity.csv");
    const std::string a = nine.rows[0][nine.column("mean_nll")];
    const std::string b = exact.rows[0][exact.column("mean_nll")];
    CHECK(b.size() > a.size());
    CHECK(std::abs(std::stod(a) - std::stod(b)) <= 1e-8 * std::abs(std::stod(b)));  // 9 digits
    CHECK(read_manifest(d / "exact/tiny/manifest.json").extra["csv_digits"] == 17);
  }
  SECTION("--digits outside 1..17 is refused before any output") {
    const auto r = test::run_kvscope("run " + small_config(d, valid).string() + " --digits 18", d);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("--digits") && Contains("18"));
    CHECK(!fs::exists(d / "results"));
  }
  SECTION("an unknown key names file, line and key") {
    const fs::path cfg = small_config(d, valid, "  strde: 4\n");
    const auto r = test::run_kvscope("run " + cfg.string(), d);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("tiny.yaml:12") && Contains("unknown key 'strde'"));
    CHECK(!fs::exists(d / "results"));
  }
  SECTION("a wrong type names file, line and key") {
    const fs::path cfg = small_config(d, valid, "  stride: half\n");
    const auto r = test::run_kvscope("run " + cfg.string(), d);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err,
               Contains("tiny.yaml:12") && Contains("perplexity.stride") && Contains("integer"));
  }
  SECTION("a missing text file") {
    const auto r = test::run_kvscope("run " + small_config(d, "/no/such/text.txt").string(), d);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("/no/such/text.txt") && Contains("does not exist"));
    CHECK(!fs::exists(d / "results"));
  }
  SECTION("malformed YAML") {
    test::write_bytes(d / "bad.yaml", "kind: perplexity\nmodels:\n  - path: [unclosed\n");
    const auto r = test::run_kvscope("run bad.yaml", d);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("bad.yaml") && Contains("invalid YAML"));
  }
  SECTION("a model whose bytes differ from data/SHA256SUMS") {
    // A copy of the data tree layout with one weight byte changed: the model still loads,
    // but the run must refuse it because the checksum list says otherwise.
    const fs::path m = d / "data/models/stories260K";
    fs::create_directories(m);
    fs::copy_file(kData + "/models/stories260K/tok512.bin", m / "tok512.bin");
    fs::copy_file(test::stories260k(), m / "stories260K.bin");
    fs::copy_file(kData + "/SHA256SUMS", d / "data/SHA256SUMS");
    {
      std::fstream f(m / "stories260K.bin", std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(500000);
      f.put('\x42');
    }
    test::write_bytes(d / "sum.yaml",
                      "kind: perplexity\nmodels:\n  - path: " + (m / "stories260K.bin").string() +
                          "\ntexts:\n  - path: " + valid + "\nperplexity:\n  max_tokens: 10\n");
    const auto r = test::run_kvscope("run sum.yaml", d);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err,
               Contains("sha256 mismatch") && Contains("stories260K.bin") &&
                   Contains("b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"));
    CHECK(!fs::exists(d / "results/sum"));
  }
  SECTION("an unknown experiment kind lists the known ones") {
    test::write_bytes(d / "k.yaml", "kind: perplexty\n");
    const auto r = test::run_kvscope("run k.yaml", d);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("k.yaml:1") && Contains("perplexty") && Contains("perplexity"));
  }
}

TEST_CASE("the README's main job writes only into git-ignored scratch space", "[cli]") {
  // scripts/bootstrap.sh is what the README's first command runs; every `kvscope run` in it
  // must write under a path git ignores, so the quick start leaves the tree clean.
  const fs::path root = KVSCOPE_SOURCE_DIR;
  const std::string script = test::slurp(root / "scripts/bootstrap.sh");
  REQUIRE(!script.empty());
  std::istringstream lines(script);
  int runs = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("build/kvscope ", 0) != 0) continue;
    INFO(line);
    const std::string sub = line.substr(14, line.find(' ', 14) - 14);
    CHECK((sub == "run" || sub == "generate"));  // generate prints; it writes no file
    if (sub != "run") continue;
    ++runs;
    const size_t at = line.find("--results ");
    REQUIRE(at != std::string::npos);
    std::string dir = line.substr(at + 10);
    dir = dir.substr(0, dir.find(' '));
    CHECK(dir.rfind("results", 0) != 0);
    if (std::system(("git -C '" + root.string() + "' rev-parse >/dev/null 2>&1").c_str()) != 0) {
      WARN("not a git checkout: ignore rules not checked");
      continue;
    }
    const std::string probe = dir + "/perplexity/manifest.json";
    CHECK(std::system(("git -C '" + root.string() + "' check-ignore -q '" + probe + "'").c_str()) ==
          0);
  }
  CHECK(runs >= 1);
}

TEST_CASE("long commands show progress: dump on a terminal, run per model x text", "[cli][model]") {
  test::TempDir tmp("progress");
  const std::string dump = "dump -m " + kData + "/models/stories260K/stories260K.bin --text " +
                           kData + "/text/tinystories/tinystories_valid_head.txt --seq-len 64 " +
                           "--n-seq 6 --force -o " + (tmp / "d.h5").string();
  // Not a terminal (a pipe): the one summary line, no redrawn status.
  auto r = test::run_kvscope(dump);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("6 sequences x 64 tokens") && !Contains("ETA"));
  // On a terminal (script(1) gives the command a pseudo-terminal): sequences done, MB
  // written, elapsed and ETA, ending at 6/6.
  if (std::system("script --version >/dev/null 2>&1") == 0) {
    const std::string cmd = "script -qfec \"'" + std::string(KVSCOPE_BINARY) + "' " + dump +
                            "\" /dev/null > '" + (tmp / "tty.txt").string() + "' 2>&1";
    REQUIRE(std::system(cmd.c_str()) == 0);
    const std::string tty = test::slurp(tmp / "tty.txt");
    INFO(tty);
    CHECK_THAT(tty, Contains("6/6 sequences") && Contains("MB written") && Contains("ETA"));
  } else {
    WARN("script(1) is not installed: terminal progress not checked");
  }
  // run: one line per model x text with i/n and an ETA.
  const fs::path cfg =
      small_config(tmp.path, kData + "/text/tinystories/tinystories_valid_head.txt");
  r = test::run_kvscope("run " + cfg.string() + " --results " + (tmp / "res").string());
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("1/1 stories260K on valid") && Contains("ETA 0:00"));
}
