#include "kvscope/report/table.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "kvscope/io/atomic_file.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/text_source.hpp"

namespace kvscope {

namespace {

const char* kind_name(Column::Kind k) {
  switch (k) {
    case Column::Int:
      return "Int";
    case Column::Float:
      return "Float";
    case Column::String:
      return "String";
  }
  return "?";
}

const char* cell_kind_name(const Cell& c) {
  return std::holds_alternative<int64_t>(c)  ? "int64"
         : std::holds_alternative<double>(c) ? "double"
                                             : "string";
}

bool fits(const Cell& c, Column::Kind k) {
  switch (k) {
    case Column::Int:
      return std::holds_alternative<int64_t>(c);
    case Column::Float:
      return !std::holds_alternative<std::string>(c);  // int64 widens
    case Column::String:
      return std::holds_alternative<std::string>(c);
  }
  return false;
}

}  // namespace

Table::Table(std::string name, std::vector<Column> columns)
    : name_(std::move(name)), columns_(std::move(columns)) {
  KV_ASSERT(!columns_.empty());
  for (size_t i = 0; i < columns_.size(); ++i) {
    KV_ASSERT(!columns_[i].name.empty());
    KV_ASSERT(columns_[i].precision >= 1 && columns_[i].precision <= 17);
    for (size_t j = 0; j < i; ++j) KV_ASSERT(columns_[i].name != columns_[j].name);
  }
}

std::optional<std::string> Table::check_row(const std::vector<Cell>& row) const {
  if (row.size() != columns_.size()) {
    return fmt::format("row has {} cells, table '{}' has {} columns", row.size(), name_,
                       columns_.size());
  }
  for (size_t i = 0; i < row.size(); ++i) {
    if (!fits(row[i], columns_[i].kind)) {
      return fmt::format("table '{}' column '{}' is {}, got a {} cell", name_, columns_[i].name,
                         kind_name(columns_[i].kind), cell_kind_name(row[i]));
    }
  }
  return std::nullopt;
}

void Table::add_row(std::vector<Cell> row) {
  if (auto problem = check_row(row)) {
    std::fprintf(stderr, "kvscope: %s\n", problem->c_str());
    KV_ASSERT(!"Table::add_row: row does not match the columns");
  }
  for (size_t i = 0; i < row.size(); ++i) {
    if (columns_[i].kind == Column::Float && std::holds_alternative<int64_t>(row[i]))
      row[i] = static_cast<double>(std::get<int64_t>(row[i]));
  }
  rows_.push_back(std::move(row));
}

size_t Table::column_index(std::string_view name) const {
  for (size_t i = 0; i < columns_.size(); ++i)
    if (columns_[i].name == name) return i;
  KV_ASSERT(!"Table::column_index: no such column");
  return 0;
}

std::string format_cell(const Cell& cell, const Column& column, int digits) {
  if (const auto* i = std::get_if<int64_t>(&cell)) {
    if (column.kind == Column::Float) return format_cell(static_cast<double>(*i), column, digits);
    return fmt::format("{}", *i);
  }
  if (const auto* d = std::get_if<double>(&cell)) {
    // fmt's float formatting is exact and locale-free, so bytes depend only on the value.
    // NaN's sign bit is noise (it differs between code paths producing "the same" NaN).
    if (std::isnan(*d)) return "nan";
    return fmt::format("{:.{}g}", *d, digits > 0 ? digits : column.precision);
  }
  return std::get<std::string>(cell);
}

std::string csv_quote(std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(field);
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string Table::to_csv(int digits) const {
  std::string out;
  auto line = [&](auto&& field_at) {
    for (size_t i = 0; i < columns_.size(); ++i) {
      if (i > 0) out += ',';
      std::string f = field_at(i);
      // A lone empty field would be a blank line, which readers skip; quote it.
      out += (columns_.size() == 1 && f.empty()) ? "\"\"" : csv_quote(f);
    }
    out += '\n';
  };
  line([&](size_t i) { return columns_[i].name; });
  for (const auto& row : rows_)
    line([&](size_t i) { return format_cell(row[i], columns_[i], digits); });
  return out;
}

void write_csv(const Table& table, const std::filesystem::path& path, int digits) {
  KV_CHECK(digits >= 0 && digits <= 17,
           "{}: CSV digits must be 1..17 (or 0: each column's own), got {}", path.string(), digits);
  write_file_atomic(path, table.to_csv(digits));
}

size_t CsvData::column(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return i;
  std::string cols;
  for (const auto& h : header) cols += (cols.empty() ? "" : ", ") + h;
  throw Error(fmt::format("{}: no column '{}' (columns: {})", source, name, cols));
}

CsvData parse_csv(std::string_view text, const std::string& source) {
  CsvData out;
  out.source = source;
  std::vector<std::vector<std::string>> records;
  std::vector<int> record_lines;
  size_t i = 0;
  const size_t n = text.size();
  int line = 1;
  auto at_line_end = [&](size_t k) {
    return k < n && (text[k] == '\n' || (text[k] == '\r' && k + 1 < n && text[k + 1] == '\n'));
  };
  while (i < n) {
    const int record_line = line;
    std::vector<std::string> fields;
    bool any_quoted = false;
    for (;;) {  // one field per iteration
      std::string field;
      if (i < n && text[i] == '"') {
        any_quoted = true;
        const int open_line = line;
        ++i;
        for (;;) {
          KV_CHECK(i < n, "{}:{}: unterminated quoted field", source, open_line);
          char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        KV_CHECK(i == n || text[i] == ',' || at_line_end(i),
                 "{}:{}: unexpected '{}' after a closing quote (expected ',' or a line end)",
                 source, line, text[i]);
      } else {
        while (i < n && text[i] != ',' && !at_line_end(i)) {
          KV_CHECK(text[i] != '"',
                   "{}:{}: quote inside an unquoted field (quote the whole field and double "
                   "the quote)",
                   source, line);
          field += text[i++];
        }
      }
      fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < n) {  // line end
        i += text[i] == '\r' ? 2 : 1;
        ++line;
      }
      break;
    }
    bool blank = !any_quoted && fields.size() == 1 && fields[0].empty();
    if (blank) continue;
    records.push_back(std::move(fields));
    record_lines.push_back(record_line);
  }
  KV_CHECK(!records.empty(), "{}: empty CSV (no header line)", source);
  out.header = std::move(records[0]);
  for (size_t r = 1; r < records.size(); ++r) {
    KV_CHECK(records[r].size() == out.header.size(), "{}:{}: record has {} fields, header has {}",
             source, record_lines[r], records[r].size(), out.header.size());
    out.rows.push_back(std::move(records[r]));
  }
  return out;
}

CsvData read_csv(const std::filesystem::path& path) {
  return parse_csv(read_file_bytes(path), path.string());
}

}  // namespace kvscope
