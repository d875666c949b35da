// GGUF files: header, metadata of every value type, tensor infos, block-quantized data.
// load_model (architecture keys, tensor names and shapes, row order, the NaN/Inf scan that
// dequantizes every block), a two-token forward pass when small, then the tokenizer from
// the same metadata (tokenizer.ggml.*) and an encode/decode of a sample.
#include "fuzz_model_common.hpp"
#include "fuzz_tokenizer_common.hpp"
#include "fuzz_util.hpp"
#include "kvscope/io/error.hpp"
#include "structured_mutate.hpp"

// Half the mutations change one field of the parsed file (a metadata value or type, a
// tensor's dims, type or offset), so inputs get past the header to the loader's sizes.
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned seed) {
  return kvscope::fuzz::mutate_either(data, size, max_size, seed, kvscope::fuzz::mutate_gguf);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvscope;
  const auto path = fuzz::write_scratch("model.gguf", fuzz::as_view(data, size));
  try {
    Model m = load_model(path);
    fuzz::run_two_tokens(m);
  } catch (const Error&) {
  }
  try {
    fuzz::exercise(*load_tokenizer(path));
  } catch (const Error&) {
  }
  return 0;
}
