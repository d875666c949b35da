#include "kvscope/io/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kvscope/io/error.hpp"

namespace kvscope {

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    throw_os_error(err, fmt::format("{}: cannot open: {}", path.string(), std::strerror(err)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("{}: not a regular file", path.string()));
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    KV_CHECK(p != MAP_FAILED, "{}: mmap of {} bytes failed: {}", path.string(), f->size_,
             std::strerror(err));
    f->data_ = static_cast<const std::byte*>(p);
  } else {
    ::close(fd);
  }
  return f;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

void MappedFile::release(const std::byte* ptr, size_t bytes) const {
  if (!data_ || bytes == 0) return;
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t base = reinterpret_cast<uintptr_t>(data_);
  uintptr_t lo = reinterpret_cast<uintptr_t>(ptr);
  uintptr_t hi = lo + bytes;
  KV_ASSERT(lo >= base && hi <= base + size_);
  lo = (lo + page - 1) / page * page;  // only whole pages inside the range
  hi = hi / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

void MappedFile::populate(const std::byte* ptr, size_t bytes) const {
  if (!data_ || bytes == 0) return;
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = reinterpret_cast<uintptr_t>(ptr) / page * page;
  const uintptr_t hi = reinterpret_cast<uintptr_t>(ptr) + bytes;
  KV_ASSERT(reinterpret_cast<uintptr_t>(ptr) >= reinterpret_cast<uintptr_t>(data_) &&
            hi <= reinterpret_cast<uintptr_t>(data_) + size_);
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif
  // A hint: failure only means the pages fault in when touched, as without it.
  if (::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_READ) != 0)
    ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_WILLNEED);
}

}  // namespace kvscope
