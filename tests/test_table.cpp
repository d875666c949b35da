// Tables -> CSV: RFC 4180 quoting that survives a round trip, float text that depends only
// on the value, and rows that must match the declared columns.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <limits>

#include "kvscope/io/error.hpp"
#include "kvscope/report/table.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using kvscope::Column;
using kvscope::Table;

using kvscope::test::TempDir;

namespace {

// Runs fn in a forked child and reports whether it died by SIGABRT (KV_ASSERT's abort).
// Catch2 v2 has no death tests; fork keeps the abort out of this process.
template <class Fn>
bool aborts(Fn&& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    // Catch2's fatal-signal handler would report the abort as a failure of its own; the
    // child also keeps the expected "internal error" lines out of the test log.
    std::signal(SIGABRT, SIG_DFL);
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    fn();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

}  // namespace

TEST_CASE("table: RFC 4180 quoting round-trips through parse_csv", "[infra][table]") {
  Table t("quoting", {{"text", Column::String}, {"n", Column::Int}, {"x", Column::Float, 4}});
  const std::vector<std::string> texts = {"plain",       "with,comma",  "with \"quotes\"",
                                          "line\nbreak", "crlf\r\nend", "",
                                          " spaces ",    "\"",          ",,,"};
  for (size_t i = 0; i < texts.size(); ++i)
    t.add_row({texts[i], static_cast<int64_t>(i), 0.5 * static_cast<double>(i)});

  const std::string csv = t.to_csv();
  CHECK(csv.rfind("text,n,x\nplain,0,0\n\"with,comma\",1,0.5\n\"with \"\"quotes\"\"\",2,1\n", 0) ==
        0);
  kvscope::CsvData back = kvscope::parse_csv(csv, "mem.csv");
  CHECK(back.header == std::vector<std::string>{"text", "n", "x"});
  REQUIRE(back.rows.size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    CHECK(back.rows[i][0] == texts[i]);
    CHECK(back.rows[i][1] == std::to_string(i));
  }
  CHECK(back.column("x") == 2);
  REQUIRE_THROWS_WITH(back.column("y"), Contains("mem.csv: no column 'y' (columns: text, n, x)"));

  TempDir tmp("table_rt");
  kvscope::write_csv(t, tmp.path / "q.csv");
  CHECK_FALSE(fs::exists(tmp.path / "q.csv.partial"));
  kvscope::CsvData file = kvscope::read_csv(tmp.path / "q.csv");
  CHECK(file.rows == back.rows);
  CHECK(file.source == (tmp.path / "q.csv").string());
}

TEST_CASE("table: float text is deterministic", "[infra][table]") {
  const Column c9{"v", Column::Float};  // precision 9 by default
  const Column c3{"v", Column::Float, 3};
  CHECK(kvscope::format_cell(0.1, c9) == "0.1");
  CHECK(kvscope::format_cell(1.0 / 3.0, c9) == "0.333333333");
  CHECK(kvscope::format_cell(2.0 / 3.0, c3) == "0.667");
  CHECK(kvscope::format_cell(123456789012.0, c9) == "1.23456789e+11");
  CHECK(kvscope::format_cell(1e-10, c9) == "1e-10");
  CHECK(kvscope::format_cell(-0.0, c9) == "-0");
  CHECK(kvscope::format_cell(std::numeric_limits<double>::quiet_NaN(), c9) == "nan");
  CHECK(kvscope::format_cell(-std::numeric_limits<double>::quiet_NaN(), c9) == "nan");
  CHECK(kvscope::format_cell(std::numeric_limits<double>::infinity(), c9) == "inf");
  CHECK(kvscope::format_cell(-std::numeric_limits<double>::infinity(), c9) == "-inf");
  CHECK(kvscope::format_cell(int64_t{5}, c9) == "5");  // an Int cell in a Float column
  CHECK(kvscope::format_cell(int64_t{-9007199254740993}, Column{"i", Column::Int}) ==
        "-9007199254740993");

  // Same values, built twice along different arithmetic paths: same bytes.
  auto build = [](double scale) {
    Table t("ppl", {{"step", Column::Int}, {"ppl", Column::Float}, {"loss", Column::Float, 6}});
    for (int i = 0; i < 50; ++i) {
      double loss = std::log(1.0 + i) * scale / scale;
      t.add_row({int64_t{i}, std::exp(loss), loss});
    }
    return t.to_csv();
  };
  CHECK(build(1.0) == build(1.0));
  Table t("ints_widen", {{"x", Column::Float}});
  t.add_row({int64_t{3}});
  CHECK(std::holds_alternative<double>(t.rows()[0][0]));
  CHECK(t.to_csv() == "x\n3\n");
  Table one("one", {{"s", Column::String}});
  one.add_row({std::string()});
  CHECK(one.to_csv() == "s\n\"\"\n");  // not a blank line, which a reader would skip
  CHECK(kvscope::parse_csv(one.to_csv(), "one").rows.size() == 1);
}

TEST_CASE("table: 17 digits give back the exact double; 9 do not", "[infra][table]") {
  const Column c{"v", Column::Float};
  // 1/3 and its neighbour one ulp up: 9 digits print them alike, 17 tell them apart and
  // parse back to the same bits (what `kvscope run --digits 17` relies on).
  const double a = 1.0 / 3.0, b = std::nextafter(a, 1.0);
  CHECK(kvscope::format_cell(a, c) == kvscope::format_cell(b, c));
  CHECK(kvscope::format_cell(a, c, 17) != kvscope::format_cell(b, c, 17));
  for (double x : {a, b, 0.1, 1e-300, 6.02214076e23, -2.5e-7})
    CHECK(std::strtod(kvscope::format_cell(x, c, 17).c_str(), nullptr) == x);
  Table t("t", {{"v", Column::Float, 3}});
  t.add_row({a});
  CHECK(t.to_csv() == "v\n0.333\n");
  CHECK(t.to_csv(17) == "v\n0.33333333333333331\n");
}

TEST_CASE("table: rows must match the columns", "[infra][table]") {
  Table t("arity", {{"a", Column::Int}, {"b", Column::String}});
  CHECK_FALSE(t.check_row({int64_t{1}, std::string("x")}).has_value());
  auto short_row = t.check_row({int64_t{1}});
  REQUIRE(short_row.has_value());
  CHECK_THAT(*short_row, Contains("row has 1 cells, table 'arity' has 2 columns"));
  auto wrong_kind = t.check_row({std::string("x"), std::string("y")});
  REQUIRE(wrong_kind.has_value());
  CHECK_THAT(*wrong_kind, Contains("column 'a' is Int, got a string cell"));
  CHECK(t.check_row({1.5, std::string("y")}).has_value());  // a double is not an Int

  // add_row treats a mismatch as a kvscope bug: KV_ASSERT aborts.
  CHECK(aborts([&] { t.add_row({int64_t{1}}); }));
  CHECK(aborts([&] { t.add_row({int64_t{1}, std::string("x"), 2.0}); }));
  CHECK_FALSE(aborts([&] { t.add_row({int64_t{1}, std::string("x")}); }));
  CHECK(t.n_rows() == 0);  // the children's rows never reached this process
}

TEST_CASE("csv parser: malformed input names the line", "[infra][table]") {
  REQUIRE_THROWS_WITH(kvscope::parse_csv("a,b\n1,2\n3,\"open\n4,5\n", "u.csv"),
                      Contains("u.csv:3: unterminated quoted field"));
  REQUIRE_THROWS_WITH(kvscope::parse_csv("a,b\n1,2\n3\n", "r.csv"),
                      Contains("r.csv:3: record has 1 fields, header has 2"));
  REQUIRE_THROWS_WITH(kvscope::parse_csv("a,b\n1,x\"y\n", "s.csv"),
                      Contains("s.csv:2: quote inside an unquoted field"));
  REQUIRE_THROWS_WITH(kvscope::parse_csv("a,b\n\"1\"x,2\n", "t.csv"),
                      Contains("t.csv:2: unexpected 'x' after a closing quote"));
  REQUIRE_THROWS_WITH(kvscope::parse_csv("", "e.csv"), Contains("e.csv: empty CSV"));
  // A record spanning lines: the line count continues correctly after it.
  REQUIRE_THROWS_WITH(kvscope::parse_csv("a,b\n\"x\ny\",1\n2\n", "m.csv"),
                      Contains("m.csv:4: record has 1 fields"));
  // CRLF line ends and no final line end are fine.
  auto d = kvscope::parse_csv("a,b\r\n1,2\r\n3,4", "crlf.csv");
  CHECK(d.rows == std::vector<std::vector<std::string>>{{"1", "2"}, {"3", "4"}});
  REQUIRE_THROWS_WITH(kvscope::read_csv("/nonexistent/t.csv"), Contains("/nonexistent/t.csv"));
}
