// `kvscope tables`: every config under configs/ (the paper tables, the perplexity table and
// the dump), skipping those whose results are up to date (stale_reason), then
// results/REPORT.md. Progress: a bar with ETA redrawn on a terminal, plain lines otherwise;
// a config's expected time is its last run's wall time from its manifest.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <thread>

#include "commands.hpp"
#include "kvscope/experiments/experiment.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/report/manifest.hpp"
#include "kvscope/report/report.hpp"

namespace kvscope::cli {

namespace fs = std::filesystem;

namespace {

// Redraws "[#####.....] i/n NAME  elapsed  ETA" on stderr twice a second while a run lasts.
class Bar {
 public:
  explicit Bar(double total) : total_(total), t0_(clock::now()) {
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!stop_) {
        draw();
        cv_.wait_for(lock, std::chrono::milliseconds(500));
      }
    });
  }
  ~Bar() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    std::fprintf(stderr, "\n");
  }
  // Starts item i of n, expected to take `expected` seconds; `done` seconds of the total
  // expected time are behind.
  void start(int i, int n, const std::string& name, double expected, double done) {
    std::lock_guard<std::mutex> lock(mu_);
    i_ = i, n_ = n, name_ = name, expected_ = expected, done_ = done;
    item0_ = clock::now();
  }

 private:
  using clock = std::chrono::steady_clock;
  void draw() {  // mu_ held
    const double item = std::chrono::duration<double>(clock::now() - item0_).count();
    const double elapsed = std::chrono::duration<double>(clock::now() - t0_).count();
    const double progress = std::min(total_, done_ + std::min(item, expected_));
    const double eta = total_ - progress;
    const int width = 30, filled = total_ > 0 ? int(width * progress / total_) : 0;
    std::fprintf(stderr, "\r[%s%s] %d/%d %-22s elapsed %s  ETA %s ",
                 std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(width - filled), '.').c_str(), i_, n_, name_.c_str(),
                 mmss(elapsed).c_str(), mmss(eta).c_str());
    std::fflush(stderr);
  }
  double total_;
  clock::time_point t0_, item0_ = clock::now();
  int i_ = 0, n_ = 0;
  std::string name_;
  double expected_ = 0, done_ = 0;
  bool stop_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
};

// The training configs whose checkpoints `config` loads and that are missing: the
// checkpoints under RESULTS/checkpoints/ are git-ignored, so on a fresh clone a later
// training stage needs its predecessor rerun first. Read from its last manifest's inputs.
std::vector<std::string> missing_checkpoint_producers(const std::string& name,
                                                      const fs::path& results) {
  std::vector<std::string> producers;
  RunManifest m;
  try {
    m = read_manifest(results / name / "manifest.json");
  } catch (const Error&) {
    return producers;
  }
  const fs::path root = fs::absolute(results / "checkpoints").lexically_normal();
  for (const FileRecord& r : m.inputs) {
    const fs::path rel = fs::absolute(r.path).lexically_normal().lexically_relative(root);
    if (rel.empty() || *rel.begin() == ".." || fs::exists(r.path)) continue;
    const std::string producer = rel.begin()->string();
    if (std::count(producers.begin(), producers.end(), producer) == 0)
      producers.push_back(producer);
  }
  return producers;
}

struct TablesArgs {
  std::vector<std::string> only;
  std::string configs = "configs", results = "results";
  int threads = -1;
  bool force = false, train = false, report_only = false, dry_run = false;
};

// What `tables` will do: every config read (and so validated) before any run, one decision
// per config, and the runs queued in order.
class Plan {
 public:
  struct Job {
    fs::path config;
    std::string name, why;
    double expected;  // seconds: its last run's wall time
  };

  Plan(const TablesArgs& a, const RunOptions& opt) : a_(a), opt_(opt) {
    std::vector<fs::path> configs;
    KV_CHECK(fs::is_directory(a.configs), "tables: '{}' is not a directory of configs", a.configs);
    for (const auto& e : fs::directory_iterator(a.configs))
      if (e.path().extension() == ".yaml") configs.push_back(e.path());
    std::sort(configs.begin(), configs.end());
    for (const fs::path& c : configs) entries_.push_back({c, read_config(c, opt)});
    std::vector<std::string> unmatched = a.only;
    for (const Entry& e : entries_) {
      std::erase(unmatched, e.summary.name);
      std::erase(unmatched, e.config.stem().string());
    }
    KV_CHECK(unmatched.empty(), "tables: --only {}: no config of that name in {}",
             unmatched.front(), a.configs);
    for (const Entry& e : entries_) decide(e);
  }

  const std::vector<Job>& jobs() const { return jobs_; }
  size_t count(const char* status) const {
    return size_t(std::count_if(decisions_.begin(), decisions_.end(),
                                [&](const Decision& d) { return d.status == status; }));
  }

  // Every decision: on stdout for a dry run, else on stderr but for the runs (they say so
  // as they start).
  void print(bool dry_run) const {
    for (const Decision& d : decisions_) {
      const std::string sep = d.why.empty() ? "" : ": ";
      if (dry_run)
        std::printf("%-11s %s%s%s\n", d.status.c_str(), d.name.c_str(), sep.c_str(), d.why.c_str());
      else if (d.status != "would run")
        std::fprintf(stderr, "%s: %s%s%s%s\n", d.name.c_str(), d.status.c_str(),
                     d.why.empty() ? "" : " (", d.why.c_str(), d.why.empty() ? "" : ")");
    }
  }

 private:
  struct Entry {
    fs::path config;
    ConfigSummary summary;
  };
  // status: "up to date", "skipped" or "would run". Printed once every decision is made:
  // an up-to-date training stage may still have to run for a later one, which replaces its
  // decision.
  struct Decision {
    std::string name, status, why;
  };

  bool named(const Entry& e) const {
    return std::count(a_.only.begin(), a_.only.end(), e.summary.name) > 0 ||
           std::count(a_.only.begin(), a_.only.end(), e.config.stem().string()) > 0;
  }

  double expected_seconds(const std::string& name) const {
    try {
      return read_manifest(opt_.results_root / name / "manifest.json").wall_seconds;
    } catch (const Error&) {
      return 60.0;  // a first run: a guess
    }
  }

  void say(const char* status, const std::string& name, const std::string& why) {
    for (Decision& d : decisions_)
      if (d.name == name) {
        d = {name, status, why};
        return;
      }
    decisions_.push_back({name, status, why});
  }

  void decide(const Entry& e) {
    const std::string& name = e.summary.name;
    if (!a_.only.empty() && !named(e)) return;
    const bool training = e.summary.kind == "train";
    const std::string why = a_.force ? "--force" : stale_reason(e.config, opt_);
    if (why.empty()) {
      say("up to date", name, "");
      return;
    }
    if (training && !a_.train && !named(e)) {
      say("skipped", name,
          "a training run, " + why + "; its results stay as they are: pass --train to retrain");
      return;
    }
    schedule(name, why, e.config, training);
  }

  // Queues a run; a training stage first queues the earlier stages whose checkpoints it
  // loads and that are missing (a fresh clone has none), recursively.
  void schedule(const std::string& name, const std::string& why, const fs::path& config,
                bool training) {
    if (std::any_of(jobs_.begin(), jobs_.end(), [&](const Job& j) { return j.name == name; }))
      return;
    for (const std::string& p : training ? missing_checkpoint_producers(name, opt_.results_root)
                                         : std::vector<std::string>{}) {
      auto it = std::find_if(entries_.begin(), entries_.end(),
                             [&](const Entry& x) { return x.summary.name == p; });
      KV_CHECK(it != entries_.end(),
               "tables: {} loads the checkpoint {}, which is missing, and no config in {} "
               "is named '{}' to make it",
               name, (opt_.results_root / "checkpoints" / p).string(), a_.configs, p);
      schedule(p, "its checkpoint (not committed) is needed by " + name, it->config,
               it->summary.kind == "train");
    }
    say("would run", name, why);
    jobs_.push_back({config, name, why, expected_seconds(name)});
  }

  const TablesArgs& a_;
  const RunOptions& opt_;
  std::vector<Entry> entries_;
  std::vector<Job> jobs_;
  std::vector<Decision> decisions_;
};

// Runs the jobs in order; a failed run does not stop the others. Returns the failed ones.
std::vector<std::string> run_jobs(const std::vector<Plan::Job>& jobs, RunOptions opt) {
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  double total = 0, done = 0;
  for (const Plan::Job& j : jobs) total += j.expected;
  std::unique_ptr<Bar> bar;
  if (tty && !jobs.empty()) bar = std::make_unique<Bar>(total);
  opt.verbose = !tty;
  opt.force = true;  // staleness was decided by the plan
  std::vector<std::string> failed;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Plan::Job& j = jobs[i];
    if (bar)
      bar->start(int(i + 1), int(jobs.size()), j.name, j.expected, done);
    else
      std::fprintf(stderr, "[%zu/%zu] %s: running (%s; expected %s, ETA %s)\n", i + 1, jobs.size(),
                   j.name.c_str(), j.why.c_str(), mmss(j.expected).c_str(),
                   mmss(total - done).c_str());
    const auto s0 = std::chrono::steady_clock::now();
    bool ok = true;
    try {
      run_experiment(j.config, opt);
    } catch (const std::exception& e) {
      ok = false;
      if (bar) std::fprintf(stderr, "\n");
      std::fprintf(stderr, "[%zu/%zu] %s: FAILED: %s\n", i + 1, jobs.size(), j.name.c_str(),
                   one_line(e.what()).c_str());
      failed.push_back(j.name);
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
    done += j.expected;
    if (!bar && ok)
      std::fprintf(stderr, "[%zu/%zu] %s: done in %s\n", i + 1, jobs.size(), j.name.c_str(),
                   mmss(secs).c_str());
  }
  return failed;
}

int run_tables(const TablesArgs& a) {
  if (a.report_only) {
    write_report(a.results);
    std::fprintf(stderr, "wrote %s\n", (fs::path(a.results) / "REPORT.md").c_str());
    return 0;
  }
  RunOptions opt;
  opt.results_root = a.results;
  opt.threads = a.threads;
  const Plan plan(a, opt);
  const size_t fresh = plan.count("up to date"), skipped = plan.count("skipped");
  plan.print(a.dry_run);
  const std::vector<Plan::Job>& jobs = plan.jobs();
  if (a.dry_run) {
    std::printf("%zu would run, %zu up to date, %zu skipped\n", jobs.size(), fresh, skipped);
    return 0;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<std::string> failed = run_jobs(jobs, opt);
  write_report(opt.results_root);
  std::fprintf(
      stderr, "%zu run, %zu failed, %zu up to date, %zu skipped, in %s; wrote %s\n",
      jobs.size() - failed.size(), failed.size(), fresh, skipped,
      mmss(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()).c_str(),
      (opt.results_root / "REPORT.md").c_str());
  KV_CHECK(failed.empty(),
           "tables: {} of {} runs failed: {} (the rest ran; REPORT.md was "
           "rewritten)",
           failed.size(), jobs.size(), fmt::join(failed, ", "));
  return 0;
}

}  // namespace

Action add_tables(CLI::App& app) {
  auto a = std::make_shared<TablesArgs>();
  app.add_option("--only", a->only,
                 "run only these configs (name or file stem); repeatable; naming a training "
                 "config asks for it as --train does");
  app.add_option("--threads", a->threads, "threads for every run, overriding the configs")
      ->check(at_least(0));
  app.add_option("--configs", a->configs, "directory of experiment configs")->capture_default_str();
  app.add_option("--results", a->results, "results root directory")->capture_default_str();
  app.add_flag("--force", a->force, "rerun even the experiments that are up to date");
  app.add_flag("--train", a->train,
               "also rerun the stale training configs (kind: train), and the earlier stages "
               "whose checkpoints they load; without it training results are left as they are");
  app.add_flag("--dry-run", a->dry_run,
               "run nothing: list the configs that would run, and why, on stdout");
  app.add_flag("--report-only", a->report_only,
               "run nothing: rewrite REPORT.md from the CSVs as they are (stale or not)");
  return [a]() { return run_tables(*a); };
}

}  // namespace kvscope::cli
