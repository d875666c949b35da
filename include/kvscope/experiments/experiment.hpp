// Experiments: `kvscope run configs/NAME.yaml` reads the YAML, validates all of it
// (unknown keys and wrong types are errors naming file, line and key) before any work,
// runs the experiment kind it names, and writes results/NAME/: CSV tables, plots and
// manifest.json. Everything is written into results/NAME.partial/ first and renamed
// into place when complete, so a killed run never leaves a directory that looks done.
//
// Adding a kind: one file in experiments/ with a parse function (YAML section -> typed
// config) and a run function (config -> tables), plus one line in experiments/registry.cpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kvscope/io/progress.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/io/yaml_util.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/report/manifest.hpp"
#include "kvscope/report/table.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope {

struct ModelSpec {
  std::string name;                 // label in tables; default: the model's folder name
  std::filesystem::path path;       // checkpoint file or Hugging Face directory
  std::filesystem::path tokenizer;  // default: find_tokenizer_for(path)
  // Whether sequences made from text start with BOS; unset: the tokenizer's own rule
  // (Tokenizer::sequence_bos). Key models[i].add_bos.
  std::optional<bool> add_bos;
  std::string add_bos_where;  // "FILE:LINE: key 'models[i].add_bos'", for the error
};

// What a running experiment sees: the common config and a way to load its inputs that
// records their checksums in the manifest.
struct ExperimentContext {
  std::filesystem::path config_file;
  std::string name;  // results/<name>/
  std::string kind;
  std::filesystem::path out_dir;  // where tables and plots go (the .partial directory)
  int threads = 0;
  uint64_t seed = 0;
  std::vector<ModelSpec> models;
  std::vector<TextSpec> texts;
  RunManifest* manifest = nullptr;
  bool verbose = true;  // progress lines on stderr
  // Steps run after the tables are written into out_dir (plots drawn from the CSVs);
  // every file they leave in out_dir is listed in the manifest.
  std::vector<std::function<void(const std::filesystem::path& out_dir)>> after_tables;

  LoadedModel load(const ModelSpec& spec);                   // + manifest inputs
  std::vector<std::string> documents(const TextSpec& spec);  // + manifest inputs
  void log(const std::string& line) const;                   // stderr when verbose
  // "[NAME] warning: LINE" on stderr even when quiet, and in the manifest (extra.warnings).
  void warn(const std::string& line);

  // Progress through the units of a run (one per model x text, or per model): a kind says
  // how many there are, then reports each one finished; the line gets "i/n" and the
  // elapsed time and ETA of the run so far.
  void begin_units(int total);
  void unit_done(const std::string& line);
  // Progress inside a unit, redrawn in place while stderr is a terminal (nothing in a pipe,
  // a log or with -q, where unit_done's lines are the record): "[NAME] unit i/n: WHAT
  // done/total, elapsed, ETA of the unit's steps". done = 0 starts the unit's clock.
  void step(const std::string& what, int done, int total);
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point step_started = started;
  int units_total = 0, units_done = 0;
  std::shared_ptr<StatusLine> status;  // made on the first step()
};

using Tables = std::vector<Table>;
using ExperimentRun = std::function<Tables(ExperimentContext&)>;

struct ExperimentKind {
  std::string name;
  std::string summary;
  bool needs_models = true;
  bool needs_texts = true;
  // Whether its work splits across MPI ranks (include/kvscope/runtime/dist.hpp); kinds that
  // train are refused under mpirun with more than one rank.
  bool splits = true;
  // Reads the kind's own section (`perplexity:` for kind perplexity; may be empty) into a
  // typed config and returns the run bound to it. Must read every key it accepts.
  std::function<ExperimentRun(YamlMap& section)> prepare;
};

// One text of a config (keys path, name, format, field, doc_separator, max_docs, max_bytes;
// docs/experiments.md); throws naming the file when the text does not exist.
TextSpec parse_text_spec(YamlMap& t);

// Names of runs, models and texts become result directories, file names and table rows:
// throws "WHERE: KEY 'NAME' must be a plain name ..." for an empty name, one with '/',
// '\\' or a control character (NUL, newline), or one starting with '.' ("..").
void check_plain_name(const std::string& name, const std::string& where, const std::string& key);

// The registry (experiments/registry.cpp).
const std::vector<ExperimentKind>& experiment_kinds();
const ExperimentKind& find_experiment_kind(const std::string& name, const std::string& where);

struct RunOptions {
  std::filesystem::path results_root = "results";
  int threads = -1;  // overrides the config's `threads` when >= 0 (0 = all cores)
  bool verbose = true;
  bool force = false;  // replace results/NAME/ when it exists (else: an error)
  // > 0: floats in every CSV with this many significant digits (17: exact doubles, to compare
  // runs bit for bit); 0: each column's own precision.
  int csv_digits = 0;
};

// Runs one experiment config; returns the final results directory.
std::filesystem::path run_experiment(const std::filesystem::path& config_file,
                                     const RunOptions& opt = {});

// What a config resolves to without running it (the whole file is validated).
struct ConfigSummary {
  std::string name, kind;
  int threads = 0;                      // as the run would use them (0 resolved to all cores)
  nlohmann::json config;                // the file as JSON, as the manifest records it
  std::vector<std::string> asked_keys;  // every key the parser accepts (YamlMap::asked_keys)
};
ConfigSummary read_config(const std::filesystem::path& config_file, const RunOptions& opt = {});

// Why results/NAME/ is not an up-to-date output of `config_file`, or "" when it is: its
// manifest exists, lists outputs that all exist (HDF5 dumps excepted: they are not
// committed, so a fresh clone lacks them), records the same config, threads and
// source fingerprint (source_fingerprint(): the sources, not the binary, whose bytes
// differ with every compiler), and every input file still has the recorded sha256.
// A `train` run is the exception to the source rule: what it made is a model (shipped in
// data/models/), and retraining for every code change would cost tens of minutes and
// replace it; rerun it with `kvscope tables --only NAME --force`.
std::string stale_reason(const std::filesystem::path& config_file, const RunOptions& opt = {});

// sha256 of the running executable (recorded in manifests for provenance; staleness uses
// the source fingerprint instead).
const std::string& code_sha256();

}  // namespace kvscope
