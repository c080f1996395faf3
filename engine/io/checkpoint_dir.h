// A directory of step checkpoints: <root>/step-N/ is filled as <root>/step-N.tmp/ and renamed into
// place when complete, <root>/latest names the newest, and the two newest are kept (the newest may be
// the one a crash interrupts next). A crash therefore never leaves a half checkpoint behind `latest`.
#pragma once

#include <filesystem>
#include <optional>

namespace koff::io {

class CheckpointDir {
 public:
  explicit CheckpointDir(std::filesystem::path root) : root_(std::move(root)) {}
  // The newest complete checkpoint, if any (error when `latest` names a missing one).
  std::optional<std::filesystem::path> latest() const;
  // An empty temporary directory for checkpoint `step`; fill it, then commit(step).
  std::filesystem::path begin(int64_t step) const;
  std::filesystem::path commit(int64_t step) const;

 private:
  std::filesystem::path root_;
};

}  // namespace koff::io
