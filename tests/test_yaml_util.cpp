// Strict YAML reading: every error names the file, the 1-based line (counted by hand in the
// fixtures under tests/data/infra/) and the key.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <string>

#include "kvscope/io/error.hpp"
#include "kvscope/io/yaml_util.hpp"

using Catch::Matchers::Contains;
using kvscope::YamlMap;

namespace {

const std::string kInfra = std::string(KVSCOPE_TEST_FIXTURES_DIR) + "/infra/";

YamlMap open_fixture(const std::string& name) {
  return YamlMap(kvscope::load_yaml_file(kInfra + name), kInfra + name);
}

YamlMap from_text(const std::string& text) {
  return YamlMap(kvscope::parse_yaml_string(text, "inline.yaml"), "inline.yaml");
}

}  // namespace

TEST_CASE("yaml: unknown key names file, line and the known keys", "[infra][yaml_util]") {
  YamlMap top = open_fixture("unknown_key.yaml");
  CHECK(top.map("experiment").get<std::string>("name") == "ppl_test");
  YamlMap ppl = top.map("perplexity");
  CHECK(ppl.get<int>("window") == 128);
  CHECK(ppl.get_or<int>("stride", 128) == 128);  // absent: the typo 'strde' is not it
  CHECK(ppl.get<long>("max_tokens") == 1024);
  // Line 6 holds "  strde: 64". finish() on the top level also checks sub-maps.
  REQUIRE_THROWS_WITH(top.finish(), Contains("unknown_key.yaml:6: unknown key 'strde' in "
                                             "'perplexity' (known: window, stride, max_tokens)"));
  REQUIRE_THROWS_WITH(ppl.finish(), Contains("unknown_key.yaml:6: unknown key 'strde'"));
}

TEST_CASE("yaml: unknown top-level key", "[infra][yaml_util]") {
  YamlMap top = from_text("name: a\nmodle: b\n");
  top.get<std::string>("name");
  REQUIRE_THROWS_WITH(
      top.finish(), Contains("inline.yaml:2: unknown key 'modle' at the top level (known: name)"));
}

TEST_CASE("yaml: wrong types name file, line, dotted key and the value", "[infra][yaml_util]") {
  YamlMap top = open_fixture("wrong_type.yaml");
  const std::string f = kInfra + "wrong_type.yaml";
  YamlMap ppl = top.map("perplexity");
  // line 3: "  window: abc"
  REQUIRE_THROWS_WITH(ppl.get<int>("window"),
                      Contains(f + ":3: key 'perplexity.window' must be an integer, got 'abc'"));
  // line 4: '  stride: "64"' -- a quoted string is not an integer
  REQUIRE_THROWS_WITH(ppl.get<int>("stride"),
                      Contains(f + ":4: key 'perplexity.stride' must be an integer, got '64' "
                                   "(a quoted string)"));
  CHECK(ppl.get<std::string>("stride") == "64");
  // line 5: "models:" holds a map where a list is expected
  REQUIRE_THROWS_WITH(top.list_of_maps("models"),
                      Contains(f + ":5: key 'models' must be a list, got a map"));
  REQUIRE_THROWS_WITH(top.get<std::string>("models"),
                      Contains(f + ":5: key 'models' must be a string, got a map"));
  // line 7: "threads: -3"
  REQUIRE_THROWS_WITH(top.get_at_least<int>("threads", 0),
                      Contains(f + ":7: key 'threads' must be >= 0, got -3"));
  REQUIRE_THROWS_WITH(top.get<unsigned>("threads"),
                      Contains(f + ":7: key 'threads' must be a non-negative integer, got '-3'"));
  REQUIRE_THROWS_WITH(top.map("threads"), Contains(f + ":7: key 'threads' must be a map"));
  // line 10: "  - maybe" is the second element of flags
  REQUIRE_THROWS_WITH(top.list<bool>("flags"),
                      Contains(f + ":10: key 'flags[1]' must be a boolean (true or false), got "
                                   "'maybe'"));
  REQUIRE_THROWS_WITH(top.get<int>("ratio"),
                      Contains(f + ":11: key 'ratio' must be an integer, got '1.5e-3'"));
  CHECK(top.get<double>("ratio") == 1.5e-3);
}

TEST_CASE("yaml: missing required key names the enclosing map's line", "[infra][yaml_util]") {
  YamlMap top = open_fixture("missing_key.yaml");
  YamlMap exp = top.map("experiment");  // "experiment:" is on line 3
  CHECK(exp.get<std::string>("kind") == "perplexity");
  REQUIRE_THROWS_WITH(exp.list_of_maps("models"),
                      Contains(kInfra + "missing_key.yaml:3: missing required key 'models' in "
                                        "'experiment'"));
  REQUIRE_THROWS_WITH(top.get<int>("threads"),
                      Contains("missing_key.yaml:3: missing required key 'threads' at the top "
                               "level"));
}

TEST_CASE("yaml: malformed YAML and missing file", "[infra][yaml_util]") {
  // bad_indent.yaml line 3 is " kind: perplexity" (one space: neither inside nor outside
  // the 'experiment' map).
  REQUIRE_THROWS_WITH(kvscope::load_yaml_file(kInfra + "bad_indent.yaml"),
                      Contains(kInfra + "bad_indent.yaml:3:") && Contains("invalid YAML") &&
                          Contains("kind: perplexity"));
  REQUIRE_THROWS_WITH(kvscope::load_yaml_file(kInfra + "no_such_config.yaml"),
                      Contains("no_such_config.yaml") && Contains("No such file"));
  REQUIRE_THROWS_WITH(kvscope::parse_yaml_string("a: [1, 2\nb: 3\n", "flow.yaml"),
                      Contains("flow.yaml:2:") && Contains("invalid YAML"));
  REQUIRE_THROWS_WITH(from_text(""), Contains("inline.yaml: the top level must be a map"));
  REQUIRE_THROWS_WITH(from_text("- a\n- b\n"), Contains("must be a map of settings, got a list"));
}

TEST_CASE("yaml: duplicate keys are errors", "[infra][yaml_util]") {
  REQUIRE_THROWS_WITH(from_text("window: 1\nstride: 2\nwindow: 3\n"),
                      Contains("inline.yaml:3: duplicate key 'window' (first set on line 1)"));
}

TEST_CASE("yaml: scalar conversions are strict", "[infra][yaml_util]") {
  YamlMap m = from_text(
      "i: -42\nbig: 3000000000\nu: 7\nf: 2.5\ne: 1e-5\ninf: .inf\nb: true\nB: False\n"
      "yes_: yes\nnul:\ns: hello world\nq: '007'\nlst: [1, 2, 3]\nplus: +5\n");
  CHECK(m.get<int>("i") == -42);
  REQUIRE_THROWS_WITH(m.get<int>("big"), Contains("key 'big' must be an integer in"));
  CHECK(m.get<long long>("big") == 3000000000LL);
  CHECK(m.get<size_t>("u") == 7u);
  CHECK(m.get<float>("f") == 2.5f);
  CHECK(m.get<double>("e") == 1e-5);
  // Non-finite values mean nothing for any key (a NaN passes every range check).
  REQUIRE_THROWS_WITH(m.get<double>("inf"),
                      Contains("key 'inf' must be a finite number, got '.inf'"));
  CHECK(m.get<bool>("b"));
  CHECK_FALSE(m.get<bool>("B"));
  REQUIRE_THROWS_WITH(m.get<bool>("yes_"),
                      Contains("must be a boolean (true or false), got 'yes'"));
  REQUIRE_THROWS_WITH(m.get<std::string>("nul"), Contains("must be a string, got nothing (null)"));
  REQUIRE_THROWS_WITH(m.get_or<int>("nul", 3), Contains("must be an integer, got nothing"));
  CHECK(m.get<std::string>("s") == "hello world");
  CHECK(m.get<std::string>("q") == "007");
  CHECK(m.list<int>("lst") == std::vector<int>{1, 2, 3});
  CHECK(m.list_or<int>("absent", {4}) == std::vector<int>{4});
  CHECK(m.get<int>("plus") == 5);
  CHECK(m.get_or<double>("absent2", 0.5) == 0.5);
  CHECK_FALSE(m.get_opt<int>("absent3").has_value());
  CHECK(m.has("i"));
  CHECK_FALSE(m.has("absent4"));
  m.finish();  // every present key was read
}

TEST_CASE("yaml: choices, nested lists of maps, map_or_empty", "[infra][yaml_util]") {
  YamlMap top = from_text(
      "models:\n"
      "  - name: a\n"
      "    path: x.bin\n"
      "  - name: b\n"
      "    pth: y.bin\n"
      "policy: h2o\n");
  auto models = top.list_of_maps("models");
  REQUIRE(models.size() == 2);
  CHECK(models[0].key_path("name") == "models[0].name");
  for (auto& m : models) {
    m.get<std::string>("name");
    m.get_or<std::string>("path", "");
  }
  REQUIRE_THROWS_WITH(top.get_choice("policy", {"full", "streaming"}),
                      Contains("inline.yaml:6: key 'policy' must be one of 'full', 'streaming', "
                               "got 'h2o'"));
  CHECK(top.get_choice_or("policy2", {"full"}, "full") == "full");
  YamlMap eval = top.map_or_empty("eval");
  CHECK(eval.get_or<int>("window", 64) == 64);
  // "    pth: y.bin" is line 5, in the second list element.
  REQUIRE_THROWS_WITH(top.finish(),
                      Contains("inline.yaml:5: unknown key 'pth' in 'models[1]' (known: name, "
                               "path)"));
}

TEST_CASE("yaml: node to JSON keeps scalar kinds", "[infra][yaml_util]") {
  YamlMap m = from_text(
      "n: 12\nneg: -3\nf: 0.25\nb: true\ns: text\nq: '12'\nz: ~\nl: [1, a, 2.5]\n"
      "m: {k: v}\ninf: .inf\n");
  nlohmann::json j = m.to_json();
  CHECK(j["n"].is_number_integer());
  CHECK(j["n"] == 12);
  CHECK(j["neg"] == -3);
  CHECK(j["f"].is_number_float());
  CHECK(j["f"] == 0.25);
  CHECK(j["b"] == true);
  CHECK(j["s"] == "text");
  CHECK(j["q"].is_string());
  CHECK(j["q"] == "12");
  CHECK(j["z"].is_null());
  CHECK(j["l"] == nlohmann::json::parse(R"([1, "a", 2.5])"));
  CHECK(j["m"] == nlohmann::json::parse(R"({"k": "v"})"));
  CHECK(j["inf"] == ".inf");
  CHECK(kvscope::yaml_to_json(m.raw("l")) == j["l"]);
}

TEST_CASE("yaml: paths expand ~ and ~user as a shell does, nothing else", "[infra][yaml_util]") {
  const char* old = std::getenv("HOME");
  const std::string saved = old ? old : "";
  ::setenv("HOME", "/home/tester", 1);
  YamlMap m = from_text(
      "a: ~/models/x.gguf\nb: '~'\nc: ~root/y\nd: data/~/z\ne: ~nosuchuser_kvscope/w\nf: ''\n");
  CHECK(m.get_path("a") == "/home/tester/models/x.gguf");
  CHECK(m.get_path("b") == "/home/tester");
  CHECK(m.get_path("c") == "/root/y");  // root's home directory in /etc/passwd
  CHECK(m.get_path("d") == "data/~/z");
  CHECK_THROWS_WITH(m.get_path("e"), Contains("inline.yaml:5") && Contains("key 'e'") &&
                                         Contains("no user 'nosuchuser_kvscope'"));
  CHECK(m.get_path("f").empty());
  CHECK(m.get_path_or("g", "fallback") == "fallback");
  ::unsetenv("HOME");
  CHECK_THROWS_WITH(m.get_path("a"), Contains("HOME is not set"));
  if (old) ::setenv("HOME", saved.c_str(), 1);
}

TEST_CASE("yaml: every unknown key is named at once", "[infra][yaml_util]") {
  YamlMap m = from_text("windw: 3\nppl:\n  strde: 2\n  stride: 1\nfoo: 1\n");
  (void)m.get_or<int>("window", 0);
  YamlMap p = m.map("ppl");
  (void)p.get_or<int>("stride", 0);
  CHECK_THROWS_WITH(m.finish(), Contains("3 unknown keys: inline.yaml:1: unknown key 'windw'") &&
                                    Contains("inline.yaml:5: unknown key 'foo'") &&
                                    Contains("inline.yaml:3: unknown key 'strde' in 'ppl'") &&
                                    Contains("(known: stride)"));
}
