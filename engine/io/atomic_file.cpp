#include "engine/io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "engine/tensor/error.h"
#include "engine/tensor/interrupt.h"

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
  check_interrupt("writing a file");  // the destructor removes the temporary
  const char* p = static_cast<const char*>(data);
  while (nbytes > 0) {
    // write(2) may write less than asked (signals, large sizes); loop until done.
    const size_t chunk = std::min<size_t>(nbytes, size_t(1) << 26);
    check_interrupt("writing a file");
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

namespace {

// "<name>.tmp.<pid>.<n>" -> pid, or 0 when the name is not an AtomicFile temporary.
pid_t temporary_owner(const std::string& name) {
  const size_t at = name.rfind(".tmp.");
  if (at == std::string::npos) return 0;
  const std::string rest = name.substr(at + 5);  // "<pid>.<n>"
  const size_t dot = rest.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == rest.size()) return 0;
  for (size_t i = 0; i < rest.size(); ++i)
    if (i != dot && (rest[i] < '0' || rest[i] > '9')) return 0;
  if (dot > 9) return 0;
  return static_cast<pid_t>(std::stol(rest.substr(0, dot)));
}

}  // namespace

int64_t remove_orphaned_temporaries(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  std::vector<fs::path> orphans;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const pid_t pid = temporary_owner(it->path().filename().string());
    // kill(pid, 0) fails with ESRCH when no such process exists: its writer died (kill -9, power).
    if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) orphans.push_back(it->path());
  }
  int64_t removed = 0;
  for (const auto& p : orphans) removed += fs::remove(p, ec) ? 1 : 0;
  return removed;
}

void write_file_atomic(const std::filesystem::path& path, std::string_view contents) {
  AtomicFile file(path);
  file.write(contents);
  file.commit();
}

}  // namespace koff::io
