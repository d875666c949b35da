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

}  // namespace

Action add_tables(CLI::App& app) {
  struct Args {
    std::vector<std::string> only;
    std::string configs = "configs", results = "results";
    int threads = -1;
    bool force = false, progress_bar = false, report_only = false, dry_run = false;
  };
  auto a = std::make_shared<Args>();
  app.add_option("--only", a->only, "run only these configs (name or file stem); repeatable");
  app.add_option("--threads", a->threads, "threads for every run, overriding the configs")
      ->check(at_least(0));
  app.add_option("--configs", a->configs, "directory of experiment configs");
  app.add_option("--results", a->results, "results root directory");
  app.add_flag("--force", a->force, "rerun even the experiments that are up to date");
  app.add_flag("--dry-run", a->dry_run,
               "run nothing: list the configs that would run, and why, on stdout");
  app.add_flag("--report-only", a->report_only,
               "run nothing: rewrite REPORT.md from the CSVs as they are (stale or not)");
  return [a]() {
    if (a->report_only) {
      write_report(a->results);
      std::fprintf(stderr, "wrote %s\n", (fs::path(a->results) / "REPORT.md").c_str());
      return 0;
    }
    std::vector<fs::path> configs;
    KV_CHECK(fs::is_directory(a->configs), "tables: '{}' is not a directory of configs",
             a->configs);
    for (const auto& e : fs::directory_iterator(a->configs))
      if (e.path().extension() == ".yaml") configs.push_back(e.path());
    std::sort(configs.begin(), configs.end());
    RunOptions opt;
    opt.results_root = a->results;
    opt.threads = a->threads;
    struct Job {
      fs::path config;
      std::string name, why;
      double expected;
    };
    std::vector<Job> jobs;
    std::vector<std::string> unmatched = a->only;
    size_t fresh = 0;
    for (const fs::path& c : configs) {
      const ConfigSummary s = read_config(c, opt);  // validates every config before any run
      const bool wanted = a->only.empty() || std::count(a->only.begin(), a->only.end(), s.name) ||
                          std::count(a->only.begin(), a->only.end(), c.stem().string());
      if (!wanted) continue;
      std::erase(unmatched, s.name);
      std::erase(unmatched, c.stem().string());
      const std::string why = a->force ? "--force" : stale_reason(c, opt);
      if (why.empty()) {
        if (a->dry_run)
          std::printf("up to date  %s\n", s.name.c_str());
        else
          std::fprintf(stderr, "%s: up to date, skipped\n", s.name.c_str());
        ++fresh;
        continue;
      }
      if (a->dry_run) std::printf("would run   %s: %s\n", s.name.c_str(), why.c_str());
      double expected = 60;  // a first run: a guess
      try {
        expected = read_manifest(opt.results_root / s.name / "manifest.json").wall_seconds;
      } catch (const Error&) {
      }
      jobs.push_back({c, s.name, why, expected});
    }
    KV_CHECK(unmatched.empty(), "tables: --only {}: no config of that name in {}",
             unmatched.front(), a->configs);
    if (a->dry_run) {
      std::printf("%zu would run, %zu up to date\n", jobs.size(), fresh);
      return 0;
    }
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    double total = 0, done = 0;
    for (const Job& j : jobs) total += j.expected;
    std::unique_ptr<Bar> bar;
    if (tty && !jobs.empty()) bar = std::make_unique<Bar>(total);
    opt.verbose = !tty;
    opt.force = true;  // staleness was decided above
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < jobs.size(); ++i) {
      const Job& j = jobs[i];
      if (bar)
        bar->start(int(i + 1), int(jobs.size()), j.name, j.expected, done);
      else
        std::fprintf(stderr, "[%zu/%zu] %s: running (%s; expected %s, ETA %s)\n", i + 1,
                     jobs.size(), j.name.c_str(), j.why.c_str(), mmss(j.expected).c_str(),
                     mmss(total - done).c_str());
      const auto s0 = std::chrono::steady_clock::now();
      run_experiment(j.config, opt);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
      done += j.expected;
      if (!bar)
        std::fprintf(stderr, "[%zu/%zu] %s: done in %s\n", i + 1, jobs.size(), j.name.c_str(),
                     mmss(secs).c_str());
    }
    bar.reset();
    write_report(opt.results_root);
    std::fprintf(
        stderr, "%zu run, %zu up to date, in %s; wrote %s\n", jobs.size(), fresh,
        mmss(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()).c_str(),
        (opt.results_root / "REPORT.md").c_str());
    return 0;
  };
}

}  // namespace kvscope::cli
