#include "engine/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "engine/tensor/error.h"

namespace koff::io {

namespace {

std::atomic<uint64_t> temporary_counter{0};

std::string errno_text() { return std::strerror(errno); }

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
  KOFF_CHECK(!path_.empty(), "cannot write a file with an empty path");
  tmp_ = path_;
  tmp_ += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(temporary_counter.fetch_add(1));
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  KOFF_CHECK(fd_ >= 0, "{}: cannot create {}: {}", path_.string(), tmp_.string(), errno_text());
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) {
    std::error_code ec;  // best effort: a destructor must not throw
    std::filesystem::remove(tmp_, ec);
  }
}

void AtomicFile::write(const void* data, size_t nbytes) {
  KOFF_CHECK(fd_ >= 0 && !committed_, "{}: write after commit", path_.string());
  const char* p = static_cast<const char*>(data);
  while (nbytes > 0) {
    // write(2) may write less than asked (signals, large sizes); loop until done.
    const size_t chunk = std::min<size_t>(nbytes, size_t(1) << 30);
    const ssize_t n = ::write(fd_, p, chunk);
    if (n < 0 && errno == EINTR) continue;
    KOFF_CHECK(n > 0, "{}: write failed after {} bytes: {}", path_.string(), written_, errno_text());
    p += n;
    nbytes -= static_cast<size_t>(n);
    written_ += static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  KOFF_CHECK(fd_ >= 0 && !committed_, "{}: committed twice", path_.string());
  KOFF_CHECK(::fsync(fd_) == 0, "{}: fsync failed: {}", path_.string(), errno_text());
  const int rc = ::close(fd_);
  fd_ = -1;
  KOFF_CHECK(rc == 0, "{}: close failed: {}", path_.string(), errno_text());
  KOFF_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, "{}: cannot rename {} into place: {}", path_.string(),
             tmp_.string(), errno_text());
  committed_ = true;
  // Make the rename itself durable; a failure here loses nothing already visible, so it is not an error.
  std::filesystem::path dir = path_.parent_path();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::filesystem::path& path, std::string_view contents) {
  AtomicFile file(path);
  file.write(contents);
  file.commit();
}

}  // namespace koff::io
