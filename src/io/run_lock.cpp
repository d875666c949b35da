#include "kvscope/io/run_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kvscope/io/error.hpp"

namespace kvscope {

namespace fs = std::filesystem;

OutputLock::OutputLock(const fs::path& root, const std::string& name)
    : path_(root / ("." + name + ".lock")) {
  std::error_code ec;
  fs::create_directories(root, ec);
  KV_CHECK(!ec, "cannot create the results directory {}: {}", root.string(), ec.message());
  // The holder unlinks the file when it is done; a file opened just before that is no
  // longer the lock, so the lock counts only while the open file is still the one at path_.
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int err = errno;
      throw Error(fmt::format("cannot create the lock file {} (to write {} alone): {}",
                              path_.string(), (root / name).string(), std::strerror(err)));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char pid[32] = {};
      const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
      ::close(fd);
      KV_CHECK(err == EWOULDBLOCK, "cannot lock {}: {}", path_.string(), std::strerror(err));
      throw Error(fmt::format(
          "{} is being written by another kvscope process (pid {}, holding {}); wait for it "
          "to finish, or write elsewhere with --results DIR",
          (root / name).string(), n > 0 ? std::string(pid, size_t(n)) : "unknown", path_.string()));
    }
    struct stat held {
    }, now{};
    if (::fstat(fd, &held) == 0 && ::stat(path_.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
        held.st_dev == now.st_dev) {
      const std::string pid = std::to_string(::getpid());
      if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
        // The pid is only for the message of a run refused; the lock holds without it.
      }
      fd_ = fd;
      on_signal_ = std::make_unique<RemoveOnSignal>(path_);
      return;
    }
    ::close(fd);  // unlinked by its last holder meanwhile: try the new file
  }
  throw Error(fmt::format("cannot lock {}: the file keeps being replaced", path_.string()));
}

OutputLock::~OutputLock() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // before releasing, so a waiting opener sees a new file
  ::close(fd_);
}

}  // namespace kvscope
