// Tokenizer files: tokenizer.model through load_sentencepiece_tokenizer, then a sample encoded and
// decoded.
#include "fuzz_tokenizer_common.hpp"
#include "fuzz_util.hpp"
#include "kvscope/io/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvscope;
  const auto path = fuzz::write_scratch("tokenizer.model", fuzz::as_view(data, size));
  try {
    fuzz::exercise(*load_sentencepiece_tokenizer(path));
  } catch (const Error&) {
  }
  return 0;
}
