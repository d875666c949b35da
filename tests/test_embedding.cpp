// What an embedding program (the Python module, python/) relies on in the library: eviction
// methods registered at run time, Ctrl-C turned into an error inside an InterruptScope,
// and a missing file told apart from a bad one (NotFoundError).
#include <catch2/catch.hpp>
#include <csignal>
#include <numeric>

#include "kvscope/io/error.hpp"
#include "kvscope/io/interrupt.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/kv/eviction.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/runtime/forward.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "test_util.hpp"

using namespace kvscope;
using Catch::Contains;

namespace {

const std::string kStories = test::stories260k();

// Keeps the first `budget` slots of every head.
class KeepFirst : public EvictionPolicy {
 public:
  void score(const LayerView& v, int g, int, std::vector<double>& out) const override {
    const auto pos = v.cache->positions(v.layer, g);
    out.resize(pos.size());
    for (size_t j = 0; j < pos.size(); ++j) out[j] = -double(pos[j]);
  }
};

EvictionMethod keep_first(const std::string& name) {
  return {name, "the first slots", false,
          [](YamlMap&, const PolicyContext&) { return std::make_unique<KeepFirst>(); }};
}

bool registered(const std::string& name) {
  for (const EvictionMethod& m : eviction_methods())
    if (m.name == name) return true;
  return false;
}

}  // namespace

TEST_CASE("eviction methods registered at run time are found by name and removed again",
          "[embedding]") {
  const size_t before = eviction_methods().size();
  register_eviction_method(keep_first("keep_first"));
  CHECK(eviction_methods().size() == before + 1);
  CHECK(eviction_method("keep_first", "test").summary == "the first slots");
  register_eviction_method(keep_first("keep_first"));  // again: replaces, does not add
  CHECK(eviction_methods().size() == before + 1);
  CHECK_THROWS_WITH(register_eviction_method(keep_first("streaming")),
                    Contains("'streaming' is built in"));
  CHECK_THROWS_WITH(register_eviction_method(keep_first("a+b")), Contains("plain name"));
  CHECK_THROWS_WITH(register_eviction_method(keep_first("")), Contains("plain name"));
  CHECK(unregister_eviction_method("keep_first"));
  CHECK_FALSE(registered("keep_first"));
  CHECK_FALSE(unregister_eviction_method("keep_first"));
  CHECK_FALSE(unregister_eviction_method("streaming"));  // built-in methods stay
  CHECK(registered("streaming"));
  CHECK(eviction_methods().size() == before);
  CHECK_THROWS_WITH(eviction_method("keep_first", "test"), Contains("unknown eviction method"));
}

TEST_CASE("inside an InterruptScope SIGINT stops the next forward pass, not the process",
          "[embedding]") {
  LoadedModel lm = load_model_and_tokenizer(kStories);
  const std::vector<int32_t> toks = {1, 403, 407, 261, 378};
  RunState rs(lm.model.config, 16);
  {
    InterruptScope scope;
    forward(lm.model, rs, toks);  // no signal yet: runs
    CHECK_FALSE(InterruptScope::fired());
    std::raise(SIGINT);  // would end the process outside a scope
    CHECK(InterruptScope::fired());
    rs.reset();
    CHECK_THROWS_AS(forward(lm.model, rs, toks), Interrupted);
    CHECK(rs.pos == 0);  // nothing ran
    {
      InterruptScope inner;  // nested scopes keep the outer one's flag
      CHECK(InterruptScope::fired());
    }
    CHECK_THROWS_AS(forward(lm.model, rs, toks), Interrupted);
  }
  {
    InterruptScope again;  // a new outermost scope starts clear
    CHECK_FALSE(InterruptScope::fired());
    CHECK_NOTHROW(forward(lm.model, rs, toks));
  }
  // Without a scope, an old flag is no error (the command line never sets one).
  rs.reset();
  CHECK_NOTHROW(forward(lm.model, rs, toks));
}

TEST_CASE("a missing model, text or config is a NotFoundError; a bad one is not", "[embedding]") {
  test::TempDir d("embedding_missing");
  CHECK_THROWS_AS(load_model(d / "nope.bin"), NotFoundError);
  CHECK_THROWS_AS(read_file_bytes(d / "nope.txt", 100), NotFoundError);
  test::write_bytes(d / "cut.bin", "not a checkpoint at all");
  try {
    load_model(d / "cut.bin");
    FAIL("a 23-byte checkpoint was accepted");
  } catch (const NotFoundError&) {
    FAIL("a file that exists was reported missing");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("cut.bin"));
  }
}
