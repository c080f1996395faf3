// A directory of step checkpoints: <root>/step-N/ is filled as <root>/step-N.tmp/ and renamed into
// place when complete, <root>/latest names the newest, and the two newest are kept (the newest may be
// the one a crash interrupts next). A crash therefore never leaves a half checkpoint behind `latest`.
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

namespace koff::io {

class CheckpointDir {
 public:
  explicit CheckpointDir(std::filesystem::path root) : root_(std::move(root)) {}
  // The newest complete checkpoint, if any (error when `latest` names a missing one).
  std::optional<std::filesystem::path> latest() const;
  // Every complete checkpoint, newest first: the one `latest` names, then the others by step. A
  // reader falls back along this list when the newest turns out corrupt (a disk fault, a truncation).
  std::vector<std::filesystem::path> newest_first() const;
  // Removes step-N.tmp/ folders a dead writer left behind (call before writing, as the only writer).
  void remove_unfinished() const;
  // An empty temporary directory for checkpoint `step`; fill it, then commit(step).
  std::filesystem::path begin(int64_t step) const;
  std::filesystem::path commit(int64_t step) const;

 private:
  std::filesystem::path root_;
};

}  // namespace koff::io
