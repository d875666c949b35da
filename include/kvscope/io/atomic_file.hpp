// Writes that never leave a finished-looking file behind: bytes go to PATH.partial in the
// same directory (so the final rename stays on one filesystem and is atomic) and only
// commit() renames it to PATH. A run killed half-way leaves at most a *.partial file,
// which .gitignore and the rerun logic both ignore.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace kvscope {

// A checked stdio writer: every fwrite/fflush/fsync/fclose result is checked, so a full
// disk (ENOSPC, which stdio usually reports only at flush time) throws instead of
// silently truncating a result file. Errors name the path and strerror(errno).
class FileWriter {
 public:
  // Opens `path` with fopen mode `mode` ("wb" truncates). Throws Error when it cannot,
  // adding which directory is missing when that is the cause.
  FileWriter(std::filesystem::path path, const char* mode = "wb");
  ~FileWriter();  // closes without checking; call close() to learn about errors
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  void write(std::string_view bytes);
  // Flushes stdio buffers, fsyncs (when `sync`; devices that cannot sync are tolerated)
  // and closes. Throws Error on any failure; the writer is closed afterwards either way.
  void close(bool sync = true);
  bool is_open() const { return f_ != nullptr; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::FILE* f_ = nullptr;
};

// Write-then-rename. Typical use:
//   AtomicFile out(path);
//   out.write(csv);
//   out.commit();   // PATH appears only here
// If an exception unwinds past `out` before commit(), the destructor removes PATH.partial.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);  // opens PATH.partial; throws Error
  ~AtomicFile();  // removes PATH.partial unless committed; never throws
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view bytes);
  // Flush, fsync, close, rename PATH.partial -> PATH (replacing an existing PATH), then
  // fsync the directory so the rename survives a crash. Throws Error on failure.
  void commit();
  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& partial_path() const { return partial_; }

 private:
  std::filesystem::path path_;
  std::filesystem::path partial_;
  FileWriter writer_;
  bool committed_ = false;
};

// PATH.partial for PATH: the one place the suffix is spelled.
std::filesystem::path partial_path_for(const std::filesystem::path& path);

// While alive, SIGINT, SIGTERM and SIGHUP unlink `partial` before the process dies of
// them, so an interrupted long write (a dump of hundreds of MB) leaves nothing behind. Up
// to 8 files at a time (more are not removed); SIGKILL cannot be caught, and the next run
// to the same output removes what it left.
class RemoveOnSignal {
 public:
  explicit RemoveOnSignal(const std::filesystem::path& partial);
  ~RemoveOnSignal();
  RemoveOnSignal(const RemoveOnSignal&) = delete;
  RemoveOnSignal& operator=(const RemoveOnSignal&) = delete;

 private:
  int slot_ = -1;
};

// Writes `content` to `path` atomically (AtomicFile + commit).
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

}  // namespace kvscope
