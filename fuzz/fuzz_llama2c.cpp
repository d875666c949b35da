// llama2.c checkpoints (28-byte header + float32 tensors).
#include "fuzz_model_common.hpp"
#include "fuzz_util.hpp"
#include "kvscope/io/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvscope;
  const auto path = fuzz::write_scratch("model.bin", fuzz::as_view(data, size));
  try {
    Model m = load_model(path);
    fuzz::run_two_tokens(m);
  } catch (const Error&) {
  }
  return 0;
}
