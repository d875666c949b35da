// The kv_spectrum experiment: the live path and the dump path give the same spectra for
// the same sequences; group scopes at the extremes equal the head and layer scopes; the
// plots are real PNG/SVG files; gnuplot and config errors are reported.
#include <catch2/catch.hpp>
#include <map>

#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/report/plot.hpp"
#include "kvscope/report/table.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

fs::path run(const fs::path& dir, const std::string& name, const std::string& yaml) {
  return test::run_config(dir, name, yaml);
}

const std::string kModel =
    "  - name: stories260K\n    path: " + kData + "/models/stories260K/stories260K.bin\n";
const std::string kText = "  - name: valid\n    path: " + kData +
                          "/text/tinystories/tinystories_valid_head.txt\n"
                          "    doc_separator: \"<|endoftext|>\"\n";

// (layer, tensor, scope, groups, index) -> the row's cells from `col` on.
std::map<std::string, std::vector<std::string>> by_key(const CsvData& d, size_t from) {
  std::map<std::string, std::vector<std::string>> m;
  for (const auto& r : d.rows) {
    const std::string k = r[d.column("layer")] + "/" + r[d.column("tensor")] + "/" +
                          r[d.column("scope")] + "/" + r[d.column("groups")] + "/" +
                          r[d.column("index")] + "/" + r[d.column("rank")];
    m[k] = std::vector<std::string>(r.begin() + long(from), r.end());
  }
  return m;
}

}  // namespace

TEST_CASE("kv_spectrum from a live run equals kv_spectrum from a dump of it", "[spectrum][model]") {
  test::TempDir tmp("spectrum_paths");
  const std::string section =
      "  tensors: [k_pre_rope, k, v]\n  scopes: [layer, head, group]\n"
      "  target_kv_heads: [4, 2, 1]\n";
  const fs::path live = run(tmp.path, "live",
                            "kind: kv_spectrum\nmodels:\n" + kModel + "texts:\n" + kText +
                                "kv_spectrum:\n  tokens: 256\n  seq_len: 64\n" + section);
  run(tmp.path, "dump",
      "kind: dump_kv\nmodels:\n" + kModel + "texts:\n" + kText +
          "dump_kv:\n  seq_len: 64\n  n_seq: 4\n");
  const fs::path from_dump =
      run(tmp.path, "fromdump",
          "kind: kv_spectrum\nkv_spectrum:\n  dumps: [" +
              (tmp.path / "results/dump/stories260K__valid.h5").string() + "]\n" + section);
  const CsvData a = read_csv(live / "spectrum.csv"), b = read_csv(from_dump / "spectrum.csv");
  REQUIRE(a.rows.size() == b.rows.size());
  // 5 layers x 3 tensors x (32 layer + 4 x 8 head + 4 x 8 + 2 x 16 + 1 x 32 group) values.
  CHECK(a.rows.size() == 5 * 3 * (32 + 32 + 32 + 32 + 32));
  const auto ka = by_key(a, a.column("singular_value")), kb = by_key(b, b.column("singular_value"));
  CHECK(ka == kb);  // the same float data in the same order: identical bits
  CHECK(b.rows[0][b.column("calibration")] == "dump:stories260K__valid");

  // Groups of 1 head are the heads; one group of all 4 heads is the layer.
  const CsvData s = read_csv(live / "summary.csv");
  std::map<std::string, std::string> stable;
  for (const auto& r : s.rows)
    stable[r[s.column("layer")] + r[s.column("tensor")] + r[s.column("scope")] +
           r[s.column("groups")] + r[s.column("index")]] = r[s.column("stable_rank")];
  for (int l = 0; l < 5; ++l)
    for (const char* t : {"k_pre_rope", "k", "v"}) {
      const std::string p = std::to_string(l) + t;
      CHECK(stable[p + "group10"] == stable[p + "layer10"]);  // 1 group, index 0
      for (int h = 0; h < 4; ++h)
        CHECK(stable[p + "group4" + std::to_string(h)] == stable[p + "head4" + std::to_string(h)]);
    }
  CHECK(s.rows[0][s.column("tokens")] == "256");
  CHECK(s.rows[0][s.column("sequences")] == "4");
  // The plots were drawn into the results directory.
  for (const char* f : {"spectrum_stories260K__valid.png", "energy_stories260K__valid.svg"})
    CHECK(fs::exists(live / f));
  CHECK(test::slurp(live / "spectrum_stories260K__valid.png").substr(1, 3) == "PNG");
  CHECK_THAT(test::slurp(live / "energy_stories260K__valid.svg"), Contains("<svg"));
}

TEST_CASE("gnuplot failures are reported and leave no partial files", "[spectrum][plot]") {
  test::TempDir tmp("gnuplot_fail");
  const fs::path out = tmp / "x.png";
  const std::string script = "set terminal pngcairo\nset output '" + out.string() +
                             ".partial'\nplot sin(x) with nonsense\n";
  CHECK_THROWS_WITH(run_gnuplot(script, {out}, "test plot"),
                    Contains("test plot") && Contains("gnuplot failed"));
  CHECK(!fs::exists(out));
  CHECK(!fs::exists(tmp / "x.png.partial"));
}

TEST_CASE("kv_spectrum rejects bad settings before running", "[spectrum][cli]") {
  test::TempDir tmp("spectrum_bad");
  CHECK_THROWS_WITH(run(tmp.path, "a",
                        "kind: kv_spectrum\nmodels:\n" + kModel + "texts:\n" + kText +
                            "kv_spectrum:\n  target_kv_heads: [3]\n  tokens: 64\n  seq_len: 64\n"),
                    Contains("target_kv_heads 3 must divide the 4 KV heads"));
  CHECK_THROWS_WITH(run(tmp.path, "b", "kind: kv_spectrum\nkv_spectrum:\n  tensors: [q]\n"),
                    Contains("b.yaml") && Contains("'q' is not one of k_pre_rope, k, v"));
  CHECK_THROWS_WITH(run(tmp.path, "c", "kind: kv_spectrum\n"),
                    Contains("needs models and texts, or kv_spectrum.dumps"));
  CHECK_THROWS_WITH(run(tmp.path, "d", "kind: kv_spectrum\nkv_spectrum:\n  dumps: [/no/file.h5]\n"),
                    Contains("/no/file.h5") && Contains("does not exist"));
  CHECK(!fs::exists(tmp / "results/a"));
}
