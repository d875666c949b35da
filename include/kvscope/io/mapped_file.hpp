// A read-only memory mapping of a whole file. Weights of big checkpoints stay here in
// their file's dtype; pages a layer no longer needs can be handed back to the kernel.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>

namespace kvscope {

class MappedFile {
 public:
  // Throws Error naming the path when it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

  // Drops the resident pages that lie wholly inside [ptr, ptr + bytes) from this
  // process (madvise DONTNEED): they are re-read from the page cache if touched again.
  // Bounds peak RSS when a big checkpoint is widened layer by layer.
  void release(const std::byte* ptr, size_t bytes) const;
  // Maps the pages of [ptr, ptr + bytes) into this process ahead of use (madvise
  // POPULATE_READ; WILLNEED read-ahead on kernels before 5.14), so that widening them
  // later takes no page faults. Blocks until done: callers run it on a helper thread.
  void populate(const std::byte* ptr, size_t bytes) const;

 private:
  MappedFile() = default;
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace kvscope
