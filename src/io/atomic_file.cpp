#include "kvscope/io/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <system_error>

#include "kvscope/io/error.hpp"
#include "kvscope/io/interrupt.hpp"

namespace kvscope {

namespace fs = std::filesystem;

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

// When fopen fails with ENOENT the usual cause is a missing output directory; say which
// one, since "No such file or directory" on a file we are about to create is confusing.
std::string missing_dir_note(const fs::path& path, int err) {
  if (err != ENOENT) return "";
  fs::path dir = path.parent_path();
  if (dir.empty()) return "";
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return "";
  return fmt::format(" (directory '{}' does not exist)", dir.string());
}

}  // namespace

FileWriter::FileWriter(fs::path path, const char* mode) : path_(std::move(path)) {
  f_ = std::fopen(path_.c_str(), mode);
  if (f_ == nullptr) {
    int err = errno;
    throw Error(fmt::format("cannot open '{}' for writing: {}{}", path_.string(), errno_text(err),
                            missing_dir_note(path_, err)));
  }
}

FileWriter::~FileWriter() {
  if (f_ != nullptr) std::fclose(f_);
}

void FileWriter::write(std::string_view bytes) {
  KV_ASSERT(f_ != nullptr);
  if (bytes.empty()) return;
  size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f_);
  if (n != bytes.size()) {
    int err = errno;
    throw Error(fmt::format("write to '{}' failed after {} of {} bytes: {}", path_.string(), n,
                            bytes.size(), errno_text(err)));
  }
}

void FileWriter::close(bool sync) {
  KV_ASSERT(f_ != nullptr);
  std::FILE* f = f_;
  f_ = nullptr;  // closed afterwards whatever happens below
  if (std::fflush(f) != 0) {
    int err = errno;
    std::fclose(f);
    throw Error(fmt::format("write to '{}' failed: {}", path_.string(), errno_text(err)));
  }
  // EINVAL/ENOTSUP: the target (a pipe, /dev/full, some tmpfs) cannot be synced; the data
  // already reached the kernel, which is all we can ask of such a file.
  if (sync && ::fsync(fileno(f)) != 0 && errno != EINVAL && errno != ENOTSUP) {
    int err = errno;
    std::fclose(f);
    throw Error(fmt::format("fsync of '{}' failed: {}", path_.string(), errno_text(err)));
  }
  if (std::fclose(f) != 0) {
    int err = errno;
    throw Error(fmt::format("closing '{}' failed: {}", path_.string(), errno_text(err)));
  }
}

fs::path partial_path_for(const fs::path& path) {
  fs::path p = path;
  p += ".partial";
  return p;
}

AtomicFile::AtomicFile(fs::path path)
    : path_(std::move(path)), partial_(partial_path_for(path_)), writer_(partial_) {}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  std::error_code ec;  // best effort: a destructor must not throw
  fs::remove(partial_, ec);
}

void AtomicFile::write(std::string_view bytes) {
  KV_ASSERT(!committed_);
  writer_.write(bytes);
}

void AtomicFile::commit() {
  KV_ASSERT(!committed_);
  writer_.close(/*sync=*/true);
  if (std::rename(partial_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    throw Error(fmt::format("cannot rename '{}' to '{}': {}", partial_.string(), path_.string(),
                            errno_text(err)));
  }
  committed_ = true;
  // Persist the directory entry too; failure here only weakens crash safety, so ignore it.
  fs::path dir = path_.parent_path().empty() ? fs::path(".") : path_.parent_path();
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  AtomicFile out(path);
  out.write(content);
  out.commit();
}

namespace {

// The paths the handler unlinks: fixed buffers, since a signal handler may only call
// async-signal-safe functions (unlink, signal, raise) and touch plain memory. A few at a
// time: a dump's partial file and the lock beside it, a run's lock.
constexpr int kSlots = 8;
char g_paths[kSlots][4096];
volatile std::sig_atomic_t g_used[kSlots] = {};
int g_active = 0;  // registrations alive; the handlers are installed while > 0
struct sigaction g_old[3];
constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};

void remove_and_die(int sig) {
  // Inside an embedding's InterruptScope Ctrl-C stops the call, not the process: the error
  // path removes the partial files.
  if (sig == SIGINT && interrupt_scope_active()) {
    note_interrupt();
    return;
  }
  for (int i = 0; i < kSlots; ++i)
    if (g_used[i]) ::unlink(g_paths[i]);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

RemoveOnSignal::RemoveOnSignal(const fs::path& partial) {
  const std::string s = partial.string();
  if (s.size() >= sizeof g_paths[0]) return;  // such a path is refused by the OS anyway
  for (int i = 0; i < kSlots; ++i) {
    if (g_used[i]) continue;
    std::memcpy(g_paths[i], s.c_str(), s.size() + 1);
    g_used[i] = 1;
    slot_ = i;
    break;
  }
  if (slot_ < 0 || g_active++ > 0) return;
  struct sigaction sa {};
  sa.sa_handler = remove_and_die;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &sa, &g_old[i]);
}

RemoveOnSignal::~RemoveOnSignal() {
  if (slot_ < 0) return;
  g_used[slot_] = 0;
  if (--g_active == 0)
    for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &g_old[i], nullptr);
}

}  // namespace kvscope
