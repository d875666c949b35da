// One writer per output: an exclusive advisory lock (flock) on a hidden file beside the
// output (ROOT/.NAME.lock), held while a run stages and renames ROOT/NAME. A second run
// of the same name into the same root is refused by name instead of deleting the first
// one's staging directory under it, which left a manifest beside an unreadable HDF5 file.
// The kernel drops the lock when its holder dies (even of SIGKILL), so a stale file never
// blocks a later run.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "kvscope/io/atomic_file.hpp"

namespace kvscope {

class OutputLock {
 public:
  // Takes the lock on `root`/.`name`.lock (creating `root` when needed) or throws Error
  // "ROOT/NAME is being written by another kvscope process (pid P, ...)" at once.
  OutputLock(const std::filesystem::path& root, const std::string& name);
  ~OutputLock();  // removes the file and releases the lock; never throws (SIGINT, SIGTERM
                  // and SIGHUP remove it too)
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::unique_ptr<RemoveOnSignal> on_signal_;  // an interrupted run leaves no lock file
};

}  // namespace kvscope
