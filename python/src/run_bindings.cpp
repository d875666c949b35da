// kvscope.run: one experiment config, as `kvscope run` runs it (experiments/experiment.hpp).
#include <string>

#include "bindings.hpp"
#include "kvscope/experiments/experiment.hpp"

namespace kvscope::python {

void bind_run(py::module_& m) {
  m.def(
      "_run",
      [](const std::string& config, const std::string& results, bool force, int threads,
         bool verbose, int digits) {
        KV_CHECK(digits >= 0 && digits <= 17, "run: digits must lie in 0..17, got {}", digits);
        RunOptions o;
        o.results_root = results;
        o.force = force;
        o.threads = threads;
        o.verbose = verbose;
        o.csv_digits = digits;
        return long_call([&] { return run_experiment(config, o).string(); });
      },
      py::arg("config"), py::arg("results"), py::arg("force"), py::arg("threads"),
      py::arg("verbose"), py::arg("digits"));
}

}  // namespace kvscope::python
