// Result tables: columns declared once with a kind, rows checked against them, written as
// CSV whose bytes depend only on the values (google/benchmark's CSV reporter is the
// model: one header, every row has every column; run context goes in the manifest).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kvscope {

struct Column {
  enum Kind { Int, Float, String };
  std::string name;   // header text; unique within a table
  Kind kind = Float;  // what every cell of this column holds
  int precision = 9;  // significant digits when kind == Float ("{:.9g}")
};

// One value. An Int cell in a Float column is accepted and stored as double (exact below
// 2^53); every other kind mismatch is a programming error.
using Cell = std::variant<int64_t, double, std::string>;

class Table {
 public:
  Table(std::string name, std::vector<Column> columns);  // KV_ASSERTs unique, non-empty names

  // Appends a row. Wrong arity or kind is a kvscope bug: KV_ASSERT (aborts with file/line).
  void add_row(std::vector<Cell> row);
  // The problem add_row would abort on ("row has 2 cells, table 'ppl' has 3 columns"),
  // or nullopt when the row fits; for callers that build rows from untrusted shapes.
  std::optional<std::string> check_row(const std::vector<Cell>& row) const;

  const std::string& name() const { return name_; }
  const std::vector<Column>& columns() const { return columns_; }
  const std::vector<std::vector<Cell>>& rows() const { return rows_; }
  size_t n_rows() const { return rows_.size(); }
  // Index of the column called `name`; KV_ASSERT when there is none.
  size_t column_index(std::string_view name) const;

  // Header line plus one line per row, '\n' line ends, RFC 4180 quoting.
  // digits > 0: every float column with that many significant digits (17 round-trips a
  // double exactly) instead of its own precision.
  std::string to_csv(int digits = 0) const;

 private:
  std::string name_;
  std::vector<Column> columns_;
  std::vector<std::vector<Cell>> rows_;
};

// A cell as CSV text (before quoting): ints with "{}", floats with "{:.{precision}g}" and
// NaN as "nan" (never "-nan"), so equal values always give equal bytes.
std::string format_cell(const Cell& cell, const Column& column, int digits = 0);

// `field` quoted per RFC 4180 when it contains a comma, quote, CR or LF ("" for a quote).
std::string csv_quote(std::string_view field);

// Writes table.to_csv() to `path` atomically (PATH.partial, then rename).
void write_csv(const Table& table, const std::filesystem::path& path, int digits = 0);

// A CSV file read back as strings (for plotting and comparing runs).
struct CsvData {
  std::vector<std::string> header;             // first record
  std::vector<std::vector<std::string>> rows;  // every later record, header.size() fields each
  std::string source;                          // file name used in messages

  // Index of column `name`; throws Error "FILE: no column 'x' (columns: a, b)".
  size_t column(std::string_view name) const;
};

// Parses RFC 4180 CSV (quoted fields may hold commas, doubled quotes, CR and LF; records
// end with LF or CRLF; a final line end is optional). Throws Error "SOURCE:LINE: ..." for
// an unterminated quote, a quote inside an unquoted field, text after a closing quote, or
// a record whose field count differs from the header's.
CsvData parse_csv(std::string_view text, const std::string& source);
CsvData read_csv(const std::filesystem::path& path);

}  // namespace kvscope
