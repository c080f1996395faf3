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
  std::vector<std::pair<int64_t, fs::path>> all;
  for (const auto& e : fs::directory_iterator(root_)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && n.find(".tmp") == std::string::npos)
      all.emplace_back(std::stoll(n.substr(5)), e.path());
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + 2 < all.size(); ++i) fs::remove_all(all[i].second);
  return dir;
}

}  // namespace koff::io
