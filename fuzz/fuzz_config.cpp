// Experiment configs: the YAML reader and every experiment kind's key validation, as
// `kvscope run` and `kvscope tables --dry-run` do before any work.
#include "fuzz_util.hpp"
#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvscope;
  const auto path = fuzz::write_scratch("config.yaml", fuzz::as_view(data, size));
  RunOptions opt;
  opt.verbose = false;
  opt.results_root = fuzz::scratch_dir() / "results";
  try {
    (void)read_config(path, opt);
  } catch (const Error&) {
  }
  return 0;
}
