#include "kvscope/experiments/experiment.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include "kvscope/io/atomic_file.hpp"
#include "kvscope/io/checksum.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/provenance.hpp"
#include "kvscope/io/run_lock.hpp"
#include "kvscope/runtime/dist.hpp"
#include "kvscope/runtime/threads.hpp"

namespace kvscope {

namespace fs = std::filesystem;

namespace {

// The file name (or, for a path ending in '/', the last directory name) of `p`.
std::string last_name(const fs::path& p) {
  const fs::path n = p.lexically_normal();
  return n.has_filename() ? n.filename().string() : n.parent_path().filename().string();
}

std::vector<ModelSpec> parse_models(YamlMap& root) {
  std::vector<ModelSpec> out;
  for (YamlMap& m : root.list_of_maps("models")) {
    ModelSpec s;
    s.path = m.get_path("path");
    s.tokenizer = m.get_path_or("tokenizer", "");
    s.add_bos = m.get_opt<bool>("add_bos");
    s.add_bos_where =
        fmt::format("{}: key '{}'", yaml_detail::location(m.file(), m.key_line("add_bos")),
                    m.key_path("add_bos"));
    const bool dir = fs::is_directory(s.path);
    s.name = m.get_or<std::string>("name", last_name(dir ? s.path : s.path.parent_path()));
    check_plain_name(s.name, yaml_detail::location(m.file(), m.key_line("name")),
                     m.key_path("name"));
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<TextSpec> parse_texts(YamlMap& root) {
  std::vector<TextSpec> out;
  for (YamlMap& t : root.list_of_maps("texts")) out.push_back(parse_text_spec(t));
  return out;
}

// Names label table rows and name output files (dump_kv's MODEL__TEXT.h5): two entries
// with one name would mix their rows or overwrite each other's output.
template <class Spec>
void check_distinct(const std::vector<Spec>& specs, const char* key, const fs::path& file) {
  for (size_t i = 0; i < specs.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      KV_CHECK(specs[i].name != specs[j].name,
               "{}: {}[{}] and {}[{}] are both named '{}'; give each a distinct 'name:'",
               file.string(), key, j, key, i, specs[i].name);
}

// Inputs must exist before any work starts: a typo fails in a second, not an hour in.
void check_inputs_exist(const std::vector<ModelSpec>& models, const std::vector<TextSpec>& texts,
                        const fs::path& config_file) {
  for (const ModelSpec& m : models) {
    KV_CHECK_FOUND(fs::exists(m.path), "{}: model '{}': path '{}' does not exist",
                   config_file.string(), m.name, m.path.string());
    KV_CHECK_FOUND(m.tokenizer.empty() || fs::exists(m.tokenizer),
                   "{}: model '{}': tokenizer '{}' does not exist", config_file.string(), m.name,
                   m.tokenizer.string());
  }
  for (const TextSpec& t : texts)
    KV_CHECK_FOUND(fs::is_regular_file(t.path), "{}: text '{}': file '{}' does not exist",
                   config_file.string(), t.name, t.path.string());
}

}  // namespace

LoadedModel ExperimentContext::load(const ModelSpec& spec) {
  LoadedModel lm = load_model_and_tokenizer(spec.path, spec.tokenizer);
  lm.model.name = spec.name;
  if (spec.add_bos)
    set_add_bos(*lm.tokenizer, *spec.add_bos, spec.add_bos_where, lm.tokenizer_path);
  const fs::path& tp = lm.tokenizer_path;
  // Hash every file once: for the manifest, and against data/SHA256SUMS when listed there.
  std::vector<FileRecord> records;
  for (const fs::path& f : lm.model.files) records.push_back(file_record("model:" + spec.name, f));
  records.push_back(file_record("tokenizer:" + spec.name, tp));
  for (const FileRecord& r : records) {
    check_listed_sha256(r.path, r.sha256);
    if (manifest) manifest->inputs.push_back(r);
  }
  // What the weights were stored as (a GGUF's quantization types).
  if (manifest)
    manifest->extra["models"][spec.name] = {{"format", lm.model.format},
                                            {"model_type", family_name(lm.model.config.family)},
                                            {"stored_dtypes", lm.model.stored_dtypes},
                                            {"quantized", lm.model.quantized()}};
  return lm;
}

std::vector<std::string> ExperimentContext::documents(const TextSpec& spec) {
  std::vector<std::string> docs = load_documents(spec);
  KV_CHECK(!docs.empty(),
           "{}: text '{}' gives no documents (expected at least one; the file is empty or holds "
           "only newlines and separators{})",
           spec.path.string(), spec.name,
           spec.max_bytes != 0
               ? fmt::format(", or max_bytes {} is below one character", spec.max_bytes)
               : "");
  bool seen = false;
  if (manifest)
    for (const FileRecord& r : manifest->inputs) seen |= r.role == "text:" + spec.name;
  if (!seen) {
    FileRecord r = file_record("text:" + spec.name, spec.path);
    check_listed_sha256(spec.path, r.sha256);
    if (manifest) manifest->inputs.push_back(std::move(r));
  }
  return docs;
}

void ExperimentContext::begin_units(int total) {
  units_total = total;
  units_done = 0;
}

void ExperimentContext::step(const std::string& what, int done, int total) {
  if (!verbose || !dist::root()) return;
  if (!status) status = std::make_shared<StatusLine>();
  if (!status->enabled()) return;
  const auto now = std::chrono::steady_clock::now();
  if (done == 0) step_started = now;
  const double el = std::chrono::duration<double>(now - step_started).count();
  status->update(fmt::format("[{}] unit {}/{}: {} {}/{}, {}", name, units_done + 1,
                             std::max(units_total, units_done + 1), what, done, total,
                             elapsed_eta(el, done, total)),
                 done == total);
}

void ExperimentContext::unit_done(const std::string& line) {
  if (status) status->finish();
  ++units_done;
  const double el =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  log(fmt::format("{}/{} {} ({})", units_done, std::max(units_total, units_done), line,
                  elapsed_eta(el, units_done, std::max(units_total, units_done))));
}

void ExperimentContext::warn(const std::string& line) {
  if (!dist::root()) return;  // every rank sees the same; rank 0 speaks for the run
  std::fprintf(stderr, "[%s] warning: %s\n", name.c_str(), line.c_str());
  if (manifest) manifest->extra["warnings"].push_back(line);
}

void ExperimentContext::log(const std::string& line) const {
  if (status) status->finish();
  if (verbose && dist::root()) std::fprintf(stderr, "[%s] %s\n", name.c_str(), line.c_str());
}

void check_plain_name(const std::string& name, const std::string& where, const std::string& key) {
  bool plain = !name.empty() && name.size() <= 200 && name[0] != '.' &&
               name.find_first_of("/\\") == std::string::npos;
  for (const char ch : name) plain &= static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f;
  KV_CHECK(plain,
           "{}: {} '{}' must be a plain name (1 to 200 characters, no '/', '\\' or "
           "control characters, not starting with '.'): it names result rows and files",
           where, key, name);
}

TextSpec parse_text_spec(YamlMap& t) {
  TextSpec s;
  s.path = t.get_path("path");
  s.name = t.get_or<std::string>("name", s.path.stem().string());
  check_plain_name(s.name, yaml_detail::location(t.file(), t.key_line("name")), t.key_path("name"));
  s.format = t.get_choice_or("format", {"plain", "jsonl"},
                             s.path.extension() == ".jsonl" ? "jsonl" : "plain") == "jsonl"
                 ? TextSpec::Jsonl
                 : TextSpec::Plain;
  s.jsonl_field = t.get_or<std::string>("field", "text");
  s.doc_separator = t.get_or<std::string>("doc_separator", "");
  s.max_docs = t.get_at_least_or<size_t>("max_docs", 0, 0);
  s.max_bytes = t.get_at_least_or<size_t>("max_bytes", 0, 0);
  std::error_code ec;
  const bool there = std::filesystem::exists(s.path, ec);
  KV_CHECK(!ec, "{}: text '{}': path '{}' cannot be checked: {}",
           yaml_detail::location(t.file(), t.key_line("path")), s.name, s.path.string(),
           ec.message());
  KV_CHECK_FOUND(there, "{}: text '{}': file '{}' does not exist",
                 yaml_detail::location(t.file(), t.key_line("path")), s.name, s.path.string());
  // Experiments hash their inputs for the manifest: a device or pipe would never end.
  KV_CHECK(std::filesystem::is_regular_file(s.path, ec),
           "{}: text '{}': '{}' is not a regular file (a directory, device or pipe); expected a "
           "text file",
           yaml_detail::location(t.file(), t.key_line("path")), s.name, s.path.string());
  return s;
}

const ExperimentKind& find_experiment_kind(const std::string& name, const std::string& where) {
  std::string known;
  for (const ExperimentKind& k : experiment_kinds()) {
    if (k.name == name) return k;
    known += (known.empty() ? "" : ", ") + k.name;
  }
  throw Error(fmt::format("{}: unknown experiment kind '{}' (known: {})", where, name, known));
}

namespace {

// A config read and validated, ready to run.
struct Prepared {
  YAML::Node doc;
  ExperimentContext ctx;
  ExperimentRun run;
  std::vector<std::string> asked;
};

Prepared prepare_unchecked(const fs::path& config_file, const RunOptions& opt);

// A path in the config that the OS cannot even stat (over-long name, symlink loop,
// permissions) throws filesystem_error from the existence checks; reported as a config
// error naming the file and the path.
Prepared prepare(const fs::path& config_file, const RunOptions& opt) {
  try {
    return prepare_unchecked(config_file, opt);
  } catch (const fs::filesystem_error& e) {
    throw Error(fmt::format("{}: path '{}' cannot be checked: {}", config_file.string(),
                            e.path1().string(), e.code().message()));
  }
}

Prepared prepare_unchecked(const fs::path& config_file, const RunOptions& opt) {
  Prepared p;
  p.doc = load_yaml_file(config_file);
  const std::string file = config_file.string();
  KV_CHECK(p.doc.IsMap(), "{}: the top level must be a map of keys", file);
  YamlMap root(p.doc, file);

  ExperimentContext& ctx = p.ctx;
  ctx.config_file = config_file;
  ctx.verbose = opt.verbose;
  std::vector<std::string> kind_names;
  for (const ExperimentKind& k : experiment_kinds()) kind_names.push_back(k.name);
  ctx.kind = root.get_choice("kind", kind_names);
  const ExperimentKind& kind = find_experiment_kind(ctx.kind, file);
  ctx.name = root.get_or<std::string>("name", config_file.stem().string());
  check_plain_name(ctx.name, yaml_detail::location(file, root.key_line("name")), "name");
  ctx.threads = root.get_at_least_or<int>("threads", 0, 0);
  KV_CHECK(ctx.threads <= max_threads(),
           "{}: key 'threads' = {} is more than this machine can use (at most {}: 4 x its cores); "
           "use 0 for all cores",
           yaml_detail::location(file, root.key_line("threads")), ctx.threads, max_threads());
  if (opt.threads >= 0) ctx.threads = opt.threads;
  ctx.seed = root.get_or<uint64_t>("seed", 0);
  if (kind.needs_models || root.has("models")) ctx.models = parse_models(root);
  if (kind.needs_texts || root.has("texts")) ctx.texts = parse_texts(root);
  check_distinct(ctx.models, "models", config_file);
  check_distinct(ctx.texts, "texts", config_file);
  // An empty list would run nothing and write an empty table that looks like a result.
  KV_CHECK(!(kind.needs_models || root.has("models")) || !ctx.models.empty(),
           "{}: key 'models' is an empty list; expected at least one model",
           yaml_detail::location(file, root.key_line("models")));
  KV_CHECK(!(kind.needs_texts || root.has("texts")) || !ctx.texts.empty(),
           "{}: key 'texts' is an empty list; expected at least one text",
           yaml_detail::location(file, root.key_line("texts")));
  YamlMap section = root.map_or_empty(ctx.kind);
  p.run = kind.prepare(section);
  root.finish();  // every key of the file has now been read: anything else is unknown
  check_inputs_exist(ctx.models, ctx.texts, config_file);
  p.asked = root.asked_keys();
  return p;
}

}  // namespace

const std::string& code_sha256() {
  static const std::string h = sha256_file("/proc/self/exe");
  return h;
}

ConfigSummary read_config(const fs::path& config_file, const RunOptions& opt) {
  Prepared p = prepare(config_file, opt);
  ConfigSummary s;
  s.name = p.ctx.name;
  s.kind = p.ctx.kind;
  s.threads = resolve_threads(p.ctx.threads);
  s.config = yaml_to_json(p.doc);
  s.asked_keys = std::move(p.asked);
  return s;
}

std::string stale_reason(const fs::path& config_file, const RunOptions& opt) {
  const ConfigSummary c = read_config(config_file, opt);
  const fs::path dir = opt.results_root / c.name;
  if (!fs::exists(dir / "manifest.json")) return "no results yet";
  RunManifest m;
  try {
    m = read_manifest(dir / "manifest.json");
  } catch (const Error& e) {
    return std::string("unreadable manifest: ") + e.what();
  }
  // HDF5 dumps are git-ignored (.gitignore: results/**/*.h5): a fresh clone has the table that
  // describes them (dumps.csv) but not the dumps, and that is not staleness.
  for (const std::string& f : m.outputs)
    if (!fs::exists(dir / f) && fs::path(f).extension() != ".h5")
      return "output " + f + " is missing";
  if (m.config != c.config) return "the config changed";
  if (m.threads != c.threads)
    return fmt::format("threads changed ({} -> {})", m.threads, c.threads);
  if (c.kind != "train") {
    const std::string now = source_fingerprint();
    if (!m.extra.contains("source_sha256") || !m.extra["source_sha256"].is_string())
      return "its manifest records no source fingerprint (written by an older kvscope)";
    const std::string then = m.extra["source_sha256"].get<std::string>();
    if (then != now)
      return fmt::format("the sources changed (source fingerprint {} -> {})", then.substr(0, 12),
                         now.substr(0, 12));
  }
  for (const FileRecord& r : m.inputs) {
    if (!fs::exists(r.path)) return "input " + r.path + " is missing";
    if (sha256_file(r.path) != r.sha256) return "input " + r.path + " changed";
  }
  return "";
}

fs::path run_experiment(const fs::path& config_file, const RunOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  Prepared p = prepare(config_file, opt);
  const YAML::Node& doc = p.doc;
  ExperimentContext& ctx = p.ctx;
  ExperimentRun& run = p.run;

  const fs::path final_dir = opt.results_root / ctx.name;
  const fs::path partial_dir = opt.results_root / (ctx.name + ".partial");
  // One run per results directory at a time (rank 0 stages and renames it for all ranks).
  std::optional<OutputLock> lock;
  if (dist::root()) lock.emplace(opt.results_root, ctx.name);
  KV_CHECK(opt.force || !fs::exists(final_dir),
           "{}: results {} exist; pass --force to replace them (or --results DIR to write "
           "elsewhere)",
           config_file.string(), final_dir.string());
  // Under MPI every rank runs the experiment on its share of the sequences; rank 0 alone
  // writes the tables, plots and manifest (other ranks write only dump shards).
  const bool root = dist::root();
  KV_CHECK(dist::size() == 1 || find_experiment_kind(ctx.kind, "").splits,
           "{}: kind '{}' runs in one process (it does not split across MPI ranks); run it "
           "without mpirun (this job has {} ranks)",
           config_file.string(), ctx.kind, dist::size());
  if (root) {
    fs::remove_all(partial_dir);
    fs::create_directories(partial_dir);
  }
  dist::barrier();  // the directory exists before any rank writes a shard into it
  ctx.out_dir = partial_dir;
  ctx.started = t0;
  ctx.threads = set_threads(ctx.threads);

  RunManifest manifest = start_manifest(ctx.name, ctx.kind, fs::current_path());
  manifest.config = yaml_to_json(doc);
  manifest.threads = ctx.threads;
  manifest.extra["blas"] = blas_info();
  // How OpenMP threads wait (main() makes it passive unless the user set it).
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  manifest.extra["omp_wait_policy"] = wait_policy ? wait_policy : "";
  manifest.extra["seed"] = ctx.seed;
  manifest.extra["code_sha256"] = code_sha256();
  manifest.extra["source_sha256"] = source_fingerprint();
  manifest.extra["mpi"] = {{"ranks", dist::size()},
                           {"threads_per_rank", ctx.threads},
                           {"hosts", dist::hosts()},
                           {"built_with_mpi", dist::built_with_mpi()}};
  ctx.manifest = &manifest;
  // threads 0 means all of the host's cores under MPI too, so that a run's numbers do not
  // change with the rank count (the forward pass rounds differently with another thread
  // count); several ranks on one host then share its cores, which the user should know.
  const int cores = int(std::thread::hardware_concurrency());
  if (dist::size() > 1 && dist::ranks_on_host() * ctx.threads > cores)
    ctx.warn(fmt::format(
        "{} ranks x {} threads share this host's {} cores; set threads (or "
        "--threads) to {} per rank to avoid oversubscribing them",
        dist::ranks_on_host(), ctx.threads, cores, std::max(1, cores / dist::ranks_on_host())));
  ctx.log(fmt::format("kind {}, {} model(s), {} text(s), {} threads", ctx.kind, ctx.models.size(),
                      ctx.texts.size(), ctx.threads));

  try {
    const Tables tables = run(ctx);
    // Every rank is done (a rank that died never arrives, and mpirun ends the job).
    dist::barrier();
    if (!root) return final_dir;
    manifest.extra["mpi"]["bytes_reduced"] = dist::bytes_reduced();
    manifest.extra["mpi"]["seconds_in_collectives"] = dist::seconds_in_collectives();
    if (opt.csv_digits > 0) manifest.extra["csv_digits"] = opt.csv_digits;
    for (const Table& t : tables) write_csv(t, partial_dir / (t.name() + ".csv"), opt.csv_digits);
    for (const auto& step : ctx.after_tables) step(partial_dir);
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(partial_dir))
      if (e.is_regular_file()) files.push_back(e.path().filename().string());
    std::sort(files.begin(), files.end());
    manifest.outputs = files;
    manifest.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_manifest(manifest, partial_dir / "manifest.json");
    manifest.outputs.push_back("manifest.json");
  } catch (...) {
    std::error_code ec;
    fs::remove_all(partial_dir, ec);
    throw;
  }
  // Swap the complete directory into place.
  std::error_code ec;
  fs::remove_all(final_dir, ec);
  fs::rename(partial_dir, final_dir, ec);
  KV_CHECK(!ec, "cannot rename {} to {}: {}", partial_dir.string(), final_dir.string(),
           ec.message());
  ctx.log(fmt::format("wrote {} in {:.1f} s", final_dir.string(), manifest.wall_seconds));
  return final_dir;
}

}  // namespace kvscope
