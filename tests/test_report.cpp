// REPORT.md verdicts come from the numbers by each section's stated rule: here on small
// hand-written CSVs whose verdicts and percentages are worked out by hand.
#include <catch2/catch.hpp>

#include "kvscope/report/report.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

// The verdict in the summary table's row for section `id` ("| A3 | ... | verdict |").
std::string verdict(const std::string& report, const std::string& id) {
  const size_t at = report.find("| " + id + " |");
  if (at == std::string::npos) return "";
  const size_t end = report.find('\n', at);
  const std::string row = report.substr(at, end - at - 2);  // drop the closing " |"
  return row.substr(row.rfind("| ") + 2);
}

const char* kAfterHeader =
    "model,text,method,kv_heads,trainable,tokens_trained,tokens_scored,perplexity_init,"
    "perplexity_trained,kv_bytes_per_token,kv_bytes_ratio\n";

}  // namespace

TEST_CASE("report: missing results are 'not run', never a verdict", "[report]") {
  test::TempDir tmp("report_empty");
  const std::string r = make_report(tmp.path);
  for (const char* id : {"A1", "A2", "A3", "A4", "A5", "B1", "B2", "B3", "B4", "B5"}) {
    INFO(id);
    CHECK(verdict(r, id) == "not run");
  }
  CHECK_THAT(r, Contains("kvscope tables --only paper_a_finetune"));
}

TEST_CASE("report A3: SVD-a after fine-tuning against the control, by hand", "[report]") {
  test::TempDir tmp("report_a3");
  fs::create_directories(tmp / "paper_a_finetune");
  auto write = [&](double svd_a_trained) {
    test::write_bytes(tmp / "paper_a_finetune/after_training.csv",
                      std::string(kAfterHeader) +
                          "m,t,original,8,all,100,50,10,9,512,1\n"
                          "m,t,mean_pool,4,all,100,50,80,30,256,0.5\n"
                          "m,t,svd_a,4,all,100,50,40," +
                          std::to_string(svd_a_trained) + ",256,0.5\n");
  };
  // Original 10 (control fine-tuned: 9); SVD-a at 4 KV heads 40 -> 11: 11 / 9 = 1.22x,
  // within the paper's 7.08 / 5.47 = 1.294x; gap closed 1 - log(11/9) / log(40/10)
  // = 1 - 0.20067 / 1.38629 = 0.855 -> "86%".
  write(11);
  std::string r = make_report(tmp.path);
  CHECK(verdict(r, "A3") == "reproduced in kind");
  CHECK_THAT(r, Contains("| m | 8 -> 4 | all | 10.00 -> 9.00 | 80.00 -> 30.00 | - | "
                         "40.00 -> 11.00 | 1.22x | 86% |"));
  // 40 -> 12: 12 / 9 = 1.33x, beyond 1.294x (gap closed 1 - 0.28768 / 1.38629 = 79%).
  write(12);
  r = make_report(tmp.path);
  CHECK(verdict(r, "A3") == "differs");
  CHECK_THAT(r, Contains("| 1.33x | 79% |"));
  // The paper's own rows: 16 heads 7.08 / 5.47 = 1.29x, 1 - log(7.08/5.47) / log(13.57/5.47)
  // = 0.716 -> 72%.
  CHECK_THAT(r, Contains("*13.57 -> 7.08* | *1.29x* | *72%*"));
}

TEST_CASE("report A2: reproduced only when SVD-a is best in every case", "[report]") {
  test::TempDir tmp("report_a2");
  fs::create_directories(tmp / "paper_a_table4");
  fs::create_directories(tmp / "paper_a_table4_mha");
  const std::string header =
      "model,text,method,kv_heads,calibration_tokens,tokens_scored,mean_nll,perplexity,"
      "k_rel_error,v_rel_error,attn_rel_error,kv_bytes_per_token,kv_bytes_ratio\n";
  test::write_bytes(tmp / "paper_a_table4/reduction.csv",
                    header +
                        "a,t,original,4,0,10,0,5,0,0,0,64,1\n"
                        "a,t,mean_pool,2,0,10,0,50,0,0,0,32,0.5\n"
                        "a,t,svd_w,2,0,10,0,40,0,0,0,32,0.5\n"
                        "a,t,svd_a,2,0,10,0,10,0,0,0,32,0.5\n");
  // The second run's model: SVD-a loses to SVD-w, so the verdict over both must drop.
  test::write_bytes(tmp / "paper_a_table4_mha/reduction.csv",
                    header +
                        "b,t,original,8,0,10,0,5,0,0,0,64,1\n"
                        "b,t,mean_pool,4,0,10,0,60,0,0,0,32,0.5\n"
                        "b,t,svd_w,4,0,10,0,9,0,0,0,32,0.5\n"
                        "b,t,svd_a,4,0,10,0,12,0,0,0,32,0.5\n");
  const std::string r = make_report(tmp.path);
  CHECK(verdict(r, "A2") == "differs");
  // Both runs' rows, and the gap range: 50/10 = 5.0x (a), 60/12 = 5.0x (b).
  CHECK_THAT(r, Contains("| a | 4 -> 2 | 5.00 | 50.00 | 40.00 | 10.00 |"));
  CHECK_THAT(r, Contains("| b | 8 -> 4 | 5.00 | 60.00 | 9.00 | 12.00 |"));
  CHECK_THAT(r, Contains("in 1 of 2 model x target cases"));
}
