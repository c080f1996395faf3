#include "engine/io/checkpoint_dir.h"

#include <algorithm>
#include <fstream>
#include <vector>

#include "engine/io/atomic_file.h"
#include "engine/tensor/error.h"

namespace koff::io {

namespace fs = std::filesystem;

std::optional<fs::path> CheckpointDir::latest() const {
  const fs::path marker = root_ / "latest";
  if (!fs::exists(marker)) return std::nullopt;
  std::ifstream in(marker);
  std::string name;
  std::getline(in, name);
  const fs::path dir = root_ / name;
  KOFF_CHECK(!name.empty() && fs::is_directory(dir), "checkpoint marker {} names '{}', which does not exist",
             marker.string(), name);
  return dir;
}

namespace {

// The complete step-N folders of root, by step.
std::vector<std::pair<int64_t, fs::path>> complete_steps(const fs::path& root) {
  std::vector<std::pair<int64_t, fs::path>> all;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return all;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (!e.is_directory() || n.rfind("step-", 0) != 0 || n.size() == 5 ||
        n.find_first_not_of("0123456789", 5) != std::string::npos)
      continue;
    all.emplace_back(std::stoll(n.substr(5)), e.path());
  }
  std::sort(all.begin(), all.end());
  return all;
}

}  // namespace

std::vector<fs::path> CheckpointDir::newest_first() const {
  std::vector<fs::path> out;
  std::error_code ec;
  if (fs::exists(root_ / "latest", ec)) {
    std::ifstream in(root_ / "latest");
    std::string name;
    std::getline(in, name);
    if (!name.empty() && fs::is_directory(root_ / name, ec)) out.push_back(root_ / name);
  }
  const auto all = complete_steps(root_);
  for (auto it = all.rbegin(); it != all.rend(); ++it)
    if (std::find(out.begin(), out.end(), it->second) == out.end()) out.push_back(it->second);
  return out;
}

void CheckpointDir::remove_unfinished() const {
  std::error_code ec;
  if (!fs::is_directory(root_, ec)) return;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(root_)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0)
      stale.push_back(e.path());
  }
  for (const auto& p : stale) fs::remove_all(p, ec);
}

fs::path CheckpointDir::begin(int64_t step) const {
  const fs::path tmp = root_ / fmt::format("step-{}.tmp", step);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  return tmp;
}

fs::path CheckpointDir::commit(int64_t step) const {
  const fs::path dir = root_ / fmt::format("step-{}", step), tmp = root_ / fmt::format("step-{}.tmp", step);
  fs::remove_all(dir);
  fs::rename(tmp, dir);
  write_file_atomic(root_ / "latest", dir.filename().string() + "\n");
  const auto all = complete_steps(root_);
  for (size_t i = 0; i + 2 < all.size(); ++i) fs::remove_all(all[i].second);
  return dir;
}

}  // namespace koff::io
