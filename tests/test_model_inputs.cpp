// What a model and its tokenizer must agree on before any work starts: a tokenizer whose
// ids do not fit the model is refused naming both sizes, a GGUF file is named as such,
// and config.json's eos_token_id may be a list (Llama 3) that ends generation at any id.
#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "kvscope/io/error.hpp"
#include "kvscope/runtime/generate.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_TEST_DATA_DIR;

// A scratch copy of tinystories656K with config.json edited.
fs::path edited_656k(const test::TempDir& tmp, const std::string& name,
                     const std::function<void(nlohmann::json&)>& edit) {
  const fs::path dir = tmp / name;
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(kData + "/models/tinystories656K"))
    fs::copy_file(e.path(), dir / e.path().filename());
  nlohmann::json cfg = nlohmann::json::parse(test::slurp(dir / "config.json"));
  edit(cfg);
  test::write_bytes(dir / "config.json", cfg.dump(2));
  return dir;
}

}  // namespace

TEST_CASE("a tokenizer that does not fit the model is refused up front, both sizes named",
          "[cli][model]") {
  const test::TempDir tmp("tok_fit");
  const std::string m260 = test::stories260k();
  const std::string tok2048 = kData + "/models/tinystories656K/tokenizer.json";
  const std::string tok105 = kData + "/models/babyllama105/tok105.model";
  // 2048 tokens for a 512-row embedding: ids past the embedding.
  CHECK_THROWS_WITH(load_model_and_tokenizer(m260, tok2048),
                    Contains(tok2048) && Contains("2048") && Contains("512"));
  // A llama2.c checkpoint's vocabulary is its tokenizer's: 105 pieces for 512 rows is wrong.
  CHECK_THROWS_WITH(load_model_and_tokenizer(m260, tok105),
                    Contains(tok105) && Contains("105") && Contains("512"));
  // Every command refuses before writing anything.
  auto r = test::run_kvscope("generate -m " + m260 + " --tokenizer " + tok2048 + " -n 5");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("2048") && Contains("512") && Contains("tokenizer.json"));
  CHECK(r.out.empty());
  r = test::run_kvscope("dump -m " + m260 + " --tokenizer " + tok2048 + " --text " + kData +
                        "/text/tinystories/tinystories_valid_head.txt --seq-len 32 --n-seq 2 -o " +
                        (tmp / "d.h5").string());
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("2048") && Contains("512"));
  CHECK(!fs::exists(tmp / "d.h5"));
  CHECK(!fs::exists(tmp / "d.h5.partial"));
  // A Hugging Face model whose embedding is padded past its tokenizer is fine (2048 tokens,
  // 2112 rows would be; here: the shipped 2048/2048 pair loads).
  CHECK_NOTHROW(load_model_and_tokenizer(kData + "/models/tinystories656K"));
}

TEST_CASE("a GGUF file is read as GGUF, not as a llama2.c header", "[cli][loader]") {
  const test::TempDir tmp("gguf");
  // GGUF v3 header: magic, version 3, 0 tensors, 0 metadata pairs: no architecture.
  std::string bytes = "GGUF";
  for (uint32_t v : {3u, 0u, 0u, 0u, 0u, 0u}) bytes.append(reinterpret_cast<const char*>(&v), 4);
  test::write_bytes(tmp / "model.bin", bytes);  // the name does not matter, the magic does
  CHECK_THROWS_WITH(load_model(tmp / "model.bin"),
                    Contains("model.bin") && Contains("'general.architecture'"));
  const auto r = test::run_kvscope("generate -m " + (tmp / "model.bin").string());
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("general.architecture"));
  CHECK_THAT(r.err, !Contains("llama2.c"));
}

TEST_CASE("eos_token_id as a list (Llama 3) is accepted and every id ends generation",
          "[loader][model]") {
  const test::TempDir tmp("eos_list");
  // The greedy continuation of the unedited model, whose config has one eos id.
  const LoadedModel plain = load_model_and_tokenizer(kData + "/models/tinystories656K");
  GenerateOptions o;
  o.prompt = "Once upon a time";
  o.max_tokens = 12;
  const GenerateResult full = generate(plain.model, *plain.tokenizer, o);
  REQUIRE(full.new_ids.size() == 12);
  // List the 4th generated id as an end of sequence: generation stops before emitting it.
  const int32_t stop = full.new_ids[3];
  REQUIRE(std::count(full.new_ids.begin(), full.new_ids.begin() + 3, stop) == 0);
  const fs::path dir = edited_656k(tmp, "list", [&](nlohmann::json& c) {
    c["eos_token_id"] = {2, 1999, stop};
  });
  // The tokenizer must hold every stated id as a special token: 1999 is a word piece.
  CHECK_THROWS_WITH(load_model_and_tokenizer(dir),
                    Contains("tokenizer.json: this tokenizer does not belong to model 'list'") &&
                        Contains("eos_token_id[1] is 1999") && Contains("not a special token"));
  // Declared special in tokenizer.json (as Llama 3's <|eot_id|> is), they load.
  {
    nlohmann::json t = nlohmann::json::parse(test::slurp(dir / "tokenizer.json"));
    std::map<int, std::string> piece;
    for (const auto& [k, v] : t["model"]["vocab"].items()) piece[v.get<int>()] = k;
    for (const int id : {1999, int(stop)})
      t["added_tokens"].push_back({{"id", id},
                                   {"content", piece.at(id)},
                                   {"single_word", false},
                                   {"lstrip", false},
                                   {"rstrip", false},
                                   {"normalized", false},
                                   {"special", true}});
    test::write_bytes(dir / "tokenizer.json", t.dump());
  }
  const LoadedModel lm = load_model_and_tokenizer(dir);
  CHECK(lm.model.config.eos_id == 2);
  CHECK(lm.model.config.more_eos_ids == std::vector<int32_t>{1999, stop});
  const GenerateResult cut = generate(lm.model, *lm.tokenizer, o);
  CHECK(cut.new_ids == std::vector<int32_t>(full.new_ids.begin(), full.new_ids.begin() + 3));

  // Malformed lists name the file and the field.
  const fs::path empty = edited_656k(
      tmp, "empty", [](nlohmann::json& c) { c["eos_token_id"] = nlohmann::json::array(); });
  CHECK_THROWS_WITH(load_model(empty),
                    Contains("config.json") && Contains("eos_token_id") && Contains("empty list"));
  const fs::path text = edited_656k(tmp, "text", [](nlohmann::json& c) {
    c["eos_token_id"] = {2, "x"};
  });
  CHECK_THROWS_WITH(load_model(text),
                    Contains("eos_token_id") && Contains("\"x\"") && Contains("index 1"));
  const fs::path big = edited_656k(tmp, "big", [](nlohmann::json& c) {
    c["eos_token_id"] = {2, 4096};
  });
  CHECK_THROWS_WITH(load_model(big), Contains("eos id 4096") && Contains("2048"));
  // pad_token_id: an integer id, or -1 / null for none (then nothing is checked of it).
  for (const nlohmann::json& pad : {nlohmann::json(2.5), nlohmann::json("x")}) {
    const fs::path p = edited_656k(tmp, "pad" + std::string(pad.is_string() ? "s" : "f"),
                                   [&](nlohmann::json& c) { c["pad_token_id"] = pad; });
    CHECK_THROWS_WITH(load_model(p),
                      Contains("config.json") && Contains("'pad_token_id'") && Contains("or null"));
  }
  const fs::path none =
      edited_656k(tmp, "pad_none", [](nlohmann::json& c) { c["pad_token_id"] = -1; });
  CHECK(load_model(none).config.stated_special_ids.size() ==
        load_model(kData + "/models/tinystories656K").config.stated_special_ids.size());
}
