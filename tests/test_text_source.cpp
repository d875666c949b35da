// Text sources: document splitting checked against independent counts on the real files.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kvscope/io/error.hpp"
#include "kvscope/io/text_source.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using kvscope::TextSpec;

using kvscope::test::TempDir;
using kvscope::test::write_bytes;

namespace {

const fs::path kData = KVSCOPE_TEST_DATA_DIR;
const fs::path kInfra = fs::path(KVSCOPE_TEST_FIXTURES_DIR) / "infra";

TextSpec plain(const fs::path& p, const std::string& sep = "") {
  TextSpec s;
  s.name = p.filename().string();
  s.path = p;
  s.doc_separator = sep;
  return s;
}

TextSpec jsonl(const fs::path& p) {
  TextSpec s = plain(p);
  s.format = TextSpec::Jsonl;
  return s;
}

}  // namespace

TEST_CASE("text: TinyStories valid splits on <|endoftext|> lines", "[infra][text_source]") {
  const fs::path p = kData / "text/tinystories/tinystories_valid_head.txt";
  const auto docs = kvscope::load_documents(plain(p, "<|endoftext|>"));

  // Independent count: std::getline over the file, counting separator lines and the
  // non-blank stretches between them.
  std::ifstream in(p, std::ios::binary);
  std::string line;
  size_t separators = 0, stories = 0;
  bool in_story = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "<|endoftext|>") {
      ++separators;
      stories += in_story;
      in_story = false;
    } else if (!line.empty()) {
      in_story = true;
    }
  }
  stories += in_story;
  INFO("separator lines: " << separators);
  REQUIRE(separators > 100);
  CHECK(docs.size() == stories);
  CHECK(docs.size() == separators);  // the file ends with a separator and has no empty story
  for (const auto& d : docs) {
    CHECK(d.find("<|endoftext|>") == std::string::npos);
    CHECK(d.front() != '\n');
    CHECK(d.back() != '\n');
  }
  CHECK(docs[0].rfind(" Spot. Spot saw the shiny car", 0) == 0);  // the head cut mid-story
  CHECK(docs[1].rfind("Once upon a time, in a big forest", 0) == 0);

  TextSpec two = plain(p, "<|endoftext|>");
  two.max_docs = 2;
  auto first_two = kvscope::load_documents(two);
  REQUIRE(first_two.size() == 2);
  CHECK(first_two[1] == docs[1]);
}

TEST_CASE("text: C4 jsonl has one document per line", "[infra][text_source]") {
  const fs::path p = kData / "text/c4/c4_sample.jsonl";
  const std::string bytes = kvscope::read_file_bytes(p);
  size_t lines = std::count(bytes.begin(), bytes.end(), '\n') + (bytes.back() != '\n');
  const auto docs = kvscope::load_documents(jsonl(p));
  CHECK(docs.size() == lines);
  CHECK(docs[0].rfind("Beginners BBQ Class Taking Place in Missoula!\nDo you want", 0) == 0);
}

TEST_CASE("text: WikiText-2 is one plain document with its CRLF bytes", "[infra][text_source]") {
  const fs::path p = kData / "text/wikitext2/wiki.test.raw";
  const auto docs = kvscope::load_documents(plain(p));
  REQUIRE(docs.size() == 1);
  CHECK(docs[0] == kvscope::read_file_bytes(p));
  CHECK(docs[0].size() == fs::file_size(p));
  CHECK(docs[0].find("\r\n") != std::string::npos);
}

TEST_CASE("text: separators with CRLF, empty documents, limits", "[infra][text_source]") {
  TempDir tmp("text_sep");
  const fs::path p = tmp.path / "docs.txt";
  write_bytes(p,
              "\r\nfirst\r\nstill first\r\n<|endoftext|>\r\n\r\n<|endoftext|>\nsecond\n"
              "<|endoftext|> not a separator\n<|endoftext|>\nh\xc3\xa9llo third\n");
  auto docs = kvscope::load_documents(plain(p, "<|endoftext|>"));
  REQUIRE(docs.size() == 3);
  CHECK(docs[0] == "first\r\nstill first");  // inner CRLF kept, outer line ends stripped
  CHECK(docs[1] == "second\n<|endoftext|> not a separator");
  CHECK(docs[2] == "h\xc3\xa9llo third");

  TextSpec s = plain(p, "<|endoftext|>");
  s.max_docs = 1;
  CHECK(kvscope::load_documents(s).size() == 1);

  s.max_docs = 0;
  s.max_bytes = docs[0].size() + docs[1].size();  // exactly two whole documents fit
  CHECK(kvscope::load_documents(s).size() == 2);
  s.max_bytes -= 1;
  CHECK(kvscope::load_documents(s).size() == 1);

  // A first document bigger than max_bytes is cut, never inside a UTF-8 character:
  // "h\xc3\xa9..." cut at 2 bytes would split 'é', so it keeps "h".
  const fs::path q = tmp.path / "utf8.txt";
  write_bytes(q, "h\xc3\xa9llo");
  TextSpec u = plain(q);
  u.max_bytes = 2;
  CHECK(kvscope::load_documents(u) == std::vector<std::string>{"h"});
  u.max_bytes = 3;
  CHECK(kvscope::load_documents(u) == std::vector<std::string>{"h\xc3\xa9"});
  CHECK(kvscope::utf8_prefix_length("\xe2\x82\xac", 2) == 0);  // the euro sign is 3 bytes

  write_bytes(tmp.path / "empty.txt", "");
  CHECK(kvscope::load_documents(plain(tmp.path / "empty.txt")).empty());
}

TEST_CASE("text: malformed jsonl names the file and 1-based line", "[infra][text_source]") {
  // malformed.jsonl: lines 1, 2 and 4 are valid, line 3 is blank, line 5 is cut off.
  REQUIRE_THROWS_WITH(kvscope::load_documents(jsonl(kInfra / "malformed.jsonl")),
                      Contains((kInfra / "malformed.jsonl").string() + ":5: invalid JSON"));
  TextSpec first3 = jsonl(kInfra / "malformed.jsonl");
  first3.max_docs = 3;  // stops before the broken line
  CHECK(kvscope::load_documents(first3) ==
        std::vector<std::string>{"first document", "second", "third, after a blank line"});

  REQUIRE_THROWS_WITH(kvscope::load_documents(jsonl(kInfra / "missing_field.jsonl")),
                      Contains("missing_field.jsonl:2: missing field 'text' (fields: id, url)"));
  REQUIRE_THROWS_WITH(kvscope::load_documents(jsonl(kInfra / "nonstring_field.jsonl")),
                      Contains("nonstring_field.jsonl:3: field 'text' must be a string, got "
                               "number"));
  REQUIRE_THROWS_WITH(kvscope::load_documents(jsonl(kInfra / "not_object.jsonl")),
                      Contains("not_object.jsonl:1: expected a JSON object per line, got array"));
  TextSpec other = jsonl(kInfra / "missing_field.jsonl");
  other.jsonl_field = "url";
  REQUIRE_THROWS_WITH(kvscope::load_documents(other),
                      Contains("missing_field.jsonl:1: missing field 'url' (fields: text)"));
}

TEST_CASE("text: a missing file is named", "[infra][text_source]") {
  REQUIRE_THROWS_WITH(kvscope::load_documents(plain(kData / "text/no_such.txt")),
                      Contains("no_such.txt") && Contains("No such file or directory"));
  REQUIRE_THROWS_WITH(kvscope::read_file_bytes(kData / "text/no_such.txt"),
                      Contains("cannot read") && Contains("no_such.txt"));
}

TEST_CASE("text: only newlines at a document's ends are stripped, as docs/experiments.md says",
          "[infra][text_source]") {
  TempDir tmp("text_strip");
  // Between separators: leading/trailing spaces and tabs stay; leading/trailing \n and \r
  // go; inner ones stay.
  const std::string body = "\n\r\n  indented\n\n\tline two \r\n\n";
  write_bytes(tmp.path / "sep.txt", "<|endoftext|>\n" + body + "<|endoftext|>\n");
  CHECK(kvscope::load_documents(plain(tmp.path / "sep.txt", "<|endoftext|>")) ==
        std::vector<std::string>{"  indented\n\n\tline two "});
  // Without a separator the file is one document, byte for byte.
  write_bytes(tmp.path / "one.txt", body);
  CHECK(kvscope::load_documents(plain(tmp.path / "one.txt")) == std::vector<std::string>{body});
  // JSON lines are taken byte for byte, newlines at the ends included.
  write_bytes(tmp.path / "j.jsonl", "{\"text\": \"\\nkept\\n\"}\n");
  CHECK(kvscope::load_documents(jsonl(tmp.path / "j.jsonl")) ==
        std::vector<std::string>{"\nkept\n"});
  // The documentation states both rules.
  const std::string doc =
      kvscope::test::slurp(fs::path(KVSCOPE_SOURCE_DIR) / "docs/experiments.md");
  CHECK_THAT(doc, Contains("loses the newlines") && Contains("**start and end**") &&
                      Contains("one document, byte for byte") &&
                      Contains("byte for byte (no stripping"));
}
