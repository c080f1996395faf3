// AtomicFile: writes a file under a temporary name beside its destination and renames it into place
// on commit(), so that a crash, an exception or a full disk never leaves a half-written file at the
// destination (ARCHITECTURE.md, "Files on disk"). Every writer in engine/io goes through it.
//
// The temporary is `<path>.tmp.<pid>.<n>` in the same directory (rename(2) is atomic only within one
// file system); <n> is a per-process counter so that two threads writing the same path do not share
// a temporary. The data is fsync'd before the rename, so that after a power loss the destination
// holds either the old or the new contents, never a truncated new one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace koff::io {

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);  // creates the temporary; koff::Error naming the path
  ~AtomicFile();                                    // removes the temporary unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t nbytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Flushes, fsyncs and renames the temporary onto the destination. After this, write() is an error.
  void commit();

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temporary_path() const { return tmp_; }

 private:
  std::filesystem::path path_;
  std::filesystem::path tmp_;
  int fd_ = -1;
  size_t written_ = 0;
  bool committed_ = false;
};

// Removes the AtomicFile temporaries under dir (recursively) whose writing process no longer exists
// (a kill -9 or a power loss between create and commit). Returns how many were removed.
int64_t remove_orphaned_temporaries(const std::filesystem::path& dir);

// The whole contents at once (JSON files and the like).
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

}  // namespace koff::io
