// kvscope tokenize: ids as the model sees them, pieces that spell the text, clear errors.
#include <catch2/catch.hpp>
#include <sstream>

#include "kvscope/model/model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

std::vector<int32_t> parse_ids(const std::string& line) {
  std::istringstream in(line);
  std::vector<int32_t> ids;
  for (int32_t x; in >> x;) ids.push_back(x);
  return ids;
}

}  // namespace

TEST_CASE("tokenize prints the ids the model sees, and pieces that spell the text",
          "[cli][tokenizer]") {
  const std::string prompt = "Once upon a time, Lily saw a big dog.";
  for (const std::string& model : {test::stories260k(), kData + "/models/tinystories656K"}) {
    INFO(model);
    const auto r = test::run_kvscope("tokenize -m " + model + " -p '" + prompt + "'");
    REQUIRE(r.exit_code == 0);
    const std::vector<int32_t> ids = parse_ids(r.out);
    // The same tokenizer through the library: BOS (where the model expects it) + encode.
    const auto tok = load_tokenizer(find_tokenizer_for(model));
    std::vector<int32_t> want;
    if (tok->add_bos && tok->bos_id >= 0) want.push_back(tok->bos_id);
    const auto body = tok->encode(prompt);
    want.insert(want.end(), body.begin(), body.end());
    CHECK(ids == want);
    CHECK(ids.size() > 5);
    // --no-bos drops exactly the BOS; the ids decode back to the prompt.
    const auto nb = test::run_kvscope("tokenize --no-bos -m " + model + " -p '" + prompt + "'");
    CHECK(parse_ids(nb.out) == body);
    CHECK(tok->decode(body) == prompt);
    // --pieces: one "id<TAB>piece" line per id, pieces as the vocabulary spells them.
    const auto p = test::run_kvscope("tokenize --pieces -m " + model + " -p '" + prompt + "'");
    std::istringstream lines(p.out);
    size_t n = 0;
    for (std::string line; std::getline(lines, line); ++n) {
      REQUIRE(n < ids.size());
      std::string piece = tok->piece(ids[n]), esc;
      for (char ch : piece) esc += ch == '\n' ? std::string("\\n") : std::string(1, ch);
      CHECK(line == std::to_string(ids[n]) + "\t" + esc);
    }
    CHECK(n == ids.size());
  }
}

TEST_CASE("tokenize: a text file, and clear errors", "[cli][tokenizer]") {
  test::TempDir d("cli_tokenize");
  test::write_bytes(d.path / "t.txt", "One day, a cat\nsat.");
  const std::string tok = kData + "/models/stories260K/tok512.bin";
  const auto f =
      test::run_kvscope("tokenize --tokenizer " + tok + " --text " + (d.path / "t.txt").string());
  const auto p = test::run_kvscope("tokenize --tokenizer " + tok + " -p 'One day, a cat\nsat.'");
  CHECK(f.exit_code == 0);
  CHECK(f.out == p.out);

  auto r = test::run_kvscope("tokenize --tokenizer " + tok);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("--text FILE or --prompt TEXT"));
  r = test::run_kvscope("tokenize -p hi");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("--model or --tokenizer"));
  r = test::run_kvscope("tokenize --tokenizer " + tok + " --text " +
                        (d.path / "nope.txt").string());
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("nope.txt"));
  CHECK(r.out.empty());
}
