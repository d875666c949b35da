// The test bed's checks (issue 35), an optional part of the retrieval_heads kind: does a
// model have what a test of RazorAttention needs? Per model, from the probe already run:
// induction heads (KV heads scoring >= induction_x times the uniform level) and the layers
// they sit in, the copy loss on the probe's repeats; then a natural passage told twice
// (kv/passage_copy.hpp) and held-out perplexity, against a text-only twin's.
//
//   testbed:
//     text: {path: ...}        # held-out text: the passage windows and the perplexity
//     induction_x: 5           # a retrieval head scores >= this x uniform (induction or echo)
//     passage: {context: 0, length: 64, depth: 0.25, trials: 16}
//     perplexity_tokens: 0     # tokens scored (0: the whole text), window = the context
//     twin: {model: NAME, of: [NAME, ...]}   # perplexity_ratio = model / twin
#pragma once

#include <map>
#include <string>
#include <vector>

#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/yaml_util.hpp"
#include "kvscope/kv/passage_copy.hpp"
#include "kvscope/kv/retrieval_heads.hpp"
#include "kvscope/report/table.hpp"

namespace kvscope {

struct TestbedConfig {
  bool on = false;
  TextSpec text;
  double induction_x = 5.0;
  PassageCopyOptions passage;
  int64_t perplexity_tokens = 0;
  std::string twin;             // model name ("" = none)
  std::vector<std::string> of;  // the models compared with it
};

TestbedConfig parse_testbed(YamlMap& s);

// Collects one row per model, then the table (the twin's perplexity is known only once
// every model has run).
class Testbed {
 public:
  explicit Testbed(TestbedConfig cfg) : cfg_(std::move(cfg)) {}
  // s: the probe's scores on `lm`, with copy_nll its mean NLL per repeat.
  void measure(ExperimentContext& ctx, const ModelSpec& ms, const LoadedModel& lm,
               const HeadScores& s, double uniform, const std::vector<double>& copy_nll);
  Table table() const;

 private:
  struct Row {
    std::string model;
    int kv_heads = 0, induction_heads = 0, echo_heads = 0, retrieval_heads = 0;
    std::string induction_layers;  // "1 2 3"
    int n_induction_layers = 0;
    double best_induction_x = 0, best_echo_x = 0;
    double copy_first = 0, copy_later = 0;
    PassageCopyResult passage;
    double perplexity = 0;
  };
  TestbedConfig cfg_;
  std::vector<Row> rows_;
};

}  // namespace kvscope
