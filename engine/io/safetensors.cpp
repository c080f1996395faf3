#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <fmt/ranges.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "engine/io/atomic_file.h"

namespace koff::io {

namespace {

// The data of a tensor is written and read as the host's bytes; the format is little-endian.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

// The reference implementation refuses headers above 100 MB (MAX_HEADER_SIZE): a length above that
// is a corrupt or foreign file, and checking it first keeps a lying length from making us read far.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct SafetensorsDType {
  const char* name;
  uint32_t bits;
  std::optional<DType> dtype;
};

// Every dtype of the format (safetensors 0.6: F4 and F6 are sub-byte, packed).
constexpr SafetensorsDType kDTypes[] = {
    {"F64", 64, DType::f64},      {"F32", 32, DType::f32},      {"F16", 16, DType::f16},
    {"BF16", 16, DType::bf16},    {"I64", 64, DType::i64},      {"I32", 32, DType::i32},
    {"BOOL", 8, std::nullopt},    {"U8", 8, std::nullopt},      {"I8", 8, std::nullopt},
    {"I16", 16, std::nullopt},    {"U16", 16, std::nullopt},    {"U32", 32, std::nullopt},
    {"U64", 64, std::nullopt},    {"F8_E5M2", 8, std::nullopt}, {"F8_E4M3", 8, std::nullopt},
    {"F8_E8M0", 8, std::nullopt}, {"F6_E2M3", 6, std::nullopt}, {"F6_E3M2", 6, std::nullopt},
    {"F4", 4, std::nullopt},
};

const SafetensorsDType* find_dtype(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

const char* safetensors_name(DType dtype) {
  switch (dtype) {
    case DType::f64:
      return "F64";
    case DType::f32:
      return "F32";
    case DType::f16:
      return "F16";
    case DType::bf16:
      return "BF16";
    case DType::i64:
      return "I64";
    case DType::i32:
      return "I32";
  }
  return "?";
}

std::string json_type(const nlohmann::json& j) {
  if (j.is_number_unsigned()) return "an unsigned integer";
  if (j.is_number_integer()) return "a negative integer";
  if (j.is_number_float()) return "a float";
  return std::string(j.type_name());
}

// A non-negative JSON integer as u64; `what` names it in the error.
uint64_t to_u64(const nlohmann::json& j, const std::string& file, const std::string& what) {
  if (!j.is_number_unsigned()) fail("{}: {} must be a non-negative integer, got {}", file, what, json_type(j));
  return j.get<uint64_t>();
}

}  // namespace

// The bytes of a file: an mmap, or (from_bytes) a string. Views hold a shared_ptr to it.
struct SafetensorsFile::Backing {
  uint8_t* data = nullptr;
  size_t size = 0;
  void* map = nullptr;
  size_t map_size = 0;
  std::string owned;
  Backing() = default;
  Backing(const Backing&) = delete;
  Backing& operator=(const Backing&) = delete;
  ~Backing() {
    if (map) ::munmap(map, map_size);
  }
};

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path.string()) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KOFF_CHECK(fd >= 0, "{}: cannot open: {}", path_, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path_, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path_);
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail("{}: truncated: {} bytes, shorter than the 8-byte header length of a safetensors file", path_, size);
  }
  // MAP_PRIVATE + PROT_WRITE: pages are shared with the page cache until written; a write into a
  // tensor view copies that page for this process and never reaches the file.
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps its own reference to the file
  KOFF_CHECK(map != MAP_FAILED, "{}: cannot mmap {} bytes: {}", path_, size, std::strerror(err));
  backing_ = std::make_shared<Backing>();
  backing_->map = map;
  backing_->map_size = size;
  backing_->data = static_cast<uint8_t*>(map);
  backing_->size = size;
  parse();
}

SafetensorsFile SafetensorsFile::from_bytes(std::string bytes, std::string name) {
  SafetensorsFile f;
  f.path_ = std::move(name);
  f.backing_ = std::make_shared<Backing>();
  f.backing_->owned = std::move(bytes);
  f.backing_->data = reinterpret_cast<uint8_t*>(f.backing_->owned.data());
  f.backing_->size = f.backing_->owned.size();
  f.parse();
  return f;
}

void SafetensorsFile::parse() {
  const uint8_t* bytes = backing_->data;
  const size_t size = backing_->size;
  KOFF_CHECK(size >= 8, "{}: truncated: {} bytes, shorter than the 8-byte header length of a safetensors file", path_,
             size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  KOFF_CHECK(header_len <= kMaxHeaderBytes,
             "{}: header length {} exceeds the format's 100 MB limit (not a safetensors file, or corrupt)", path_,
             header_len);
  KOFF_CHECK(header_len <= size - 8, "{}: truncated: the header length says {} bytes but only {} follow it", path_,
             header_len, size - 8);
  data_start_ = 8 + header_len;
  data_size_ = size - data_start_;
  const char* hbegin = reinterpret_cast<const char*>(bytes + 8);
  const char* hend = hbegin + header_len;
  KOFF_CHECK(header_len > 0 && hbegin[0] == '{', "{}: the header does not start with '{{' (not a safetensors file)",
             path_);

  // Parse, refusing duplicate tensor names (a JSON parser would silently keep one of them, so two
  // entries could claim the same name with different offsets) and absurd nesting.
  nlohmann::json header;
  {
    std::set<std::string> seen;
    std::string duplicate;
    auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      if (depth > 16) throw Error(fmt::format("{}: the header nests JSON deeper than a safetensors header can", path_));
      if (event == nlohmann::json::parse_event_t::key && depth == 1) {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
      }
      return true;
    };
    try {
      header = nlohmann::json::parse(hbegin, hend, callback);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: the header is not valid JSON: {}", path_, e.what());
    }
    KOFF_CHECK(duplicate.empty(), "{}: the header names tensor '{}' twice", path_, duplicate);
  }
  KOFF_CHECK(header.is_object(), "{}: the header is not a JSON object", path_);

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_null()) continue;
      KOFF_CHECK(entry.is_object(), "{}: __metadata__ must be an object of strings, got {}", path_, json_type(entry));
      for (const auto& [key, value] : entry.items()) {
        KOFF_CHECK(value.is_string(), "{}: __metadata__ must map strings to strings; '{}' is {}", path_, key,
                   json_type(value));
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = fmt::format("tensor '{}'", name);
    KOFF_CHECK(entry.is_object(), "{}: {} must be an object with dtype, shape and data_offsets, got {}", path_, where,
               json_type(entry));
    for (const char* key : {"dtype", "shape", "data_offsets"})
      KOFF_CHECK(entry.contains(key), "{}: {} has no '{}'", path_, where, key);
    const auto& jdtype = entry["dtype"];
    KOFF_CHECK(jdtype.is_string(), "{}: {} has a dtype that is not a string ({})", path_, where, json_type(jdtype));
    TensorInfo info;
    info.dtype_name = jdtype.get<std::string>();
    const SafetensorsDType* dt = find_dtype(info.dtype_name);
    KOFF_CHECK(dt != nullptr, "{}: {} has unknown dtype '{}'", path_, where, info.dtype_name);
    info.dtype = dt->dtype;

    const auto& jshape = entry["shape"];
    KOFF_CHECK(jshape.is_array(), "{}: {} has a shape that is not an array ({})", path_, where, json_type(jshape));
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < jshape.size(); ++i) {
      const uint64_t d = to_u64(jshape[i], path_, fmt::format("{} shape[{}]", where, i));
      KOFF_CHECK(d <= uint64_t(std::numeric_limits<int64_t>::max()), "{}: {} shape[{}] = {} is too large", path_, where,
                 i, d);
      info.shape.push_back(static_cast<int64_t>(d));
      overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
    }
    uint64_t bits = 0;
    overflow = overflow || __builtin_mul_overflow(numel, uint64_t(dt->bits), &bits) ||
               numel > uint64_t(std::numeric_limits<int64_t>::max());
    KOFF_CHECK(!overflow, "{}: {} has shape {} whose size overflows", path_, where, shape_str(info.shape));
    KOFF_CHECK(bits % 8 == 0, "{}: {} of dtype {} and shape {} does not fill whole bytes", path_, where,
               info.dtype_name, shape_str(info.shape));

    const auto& joff = entry["data_offsets"];
    KOFF_CHECK(joff.is_array() && joff.size() == 2, "{}: {} data_offsets must be [begin, end]", path_, where);
    info.begin = to_u64(joff[0], path_, where + " data_offsets[0]");
    info.end = to_u64(joff[1], path_, where + " data_offsets[1]");
    KOFF_CHECK(info.begin <= info.end, "{}: {} has data_offsets [{}, {}] with begin after end", path_, where,
               info.begin, info.end);
    KOFF_CHECK(info.end <= data_size_,
               "{}: {} ends at byte {} of the data buffer, which has only {} bytes (truncated file, or offsets that "
               "lie)",
               path_, where, info.end, data_size_);
    KOFF_CHECK(info.end - info.begin == bits / 8,
               "{}: {} has data_offsets [{}, {}] ({} bytes) but dtype {} and shape {} need {} bytes", path_, where,
               info.begin, info.end, info.end - info.begin, info.dtype_name, shape_str(info.shape), bits / 8);
    infos_.emplace(name, std::move(info));
  }

  // The tensors must tile the data buffer exactly (see the header comment).
  for (const auto& [name, info] : infos_) names_.push_back(name);
  std::stable_sort(names_.begin(), names_.end(), [&](const std::string& a, const std::string& b) {
    const TensorInfo &x = infos_.at(a), &y = infos_.at(b);
    return std::pair(x.begin, x.end) < std::pair(y.begin, y.end);
  });
  uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const std::string& name : names_) {
    const TensorInfo& info = infos_.at(name);
    if (info.begin < covered) {
      const TensorInfo& p = infos_.at(*previous);
      fail("{}: tensor '{}' (bytes [{}, {})) overlaps tensor '{}' (bytes [{}, {})) in the data buffer", path_, name,
           info.begin, info.end, *previous, p.begin, p.end);
    }
    KOFF_CHECK(info.begin == covered, "{}: bytes [{}, {}) of the data buffer, before tensor '{}', belong to no tensor",
               path_, covered, info.begin, name);
    covered = info.end;
    previous = &name;
  }
  KOFF_CHECK(covered == data_size_,
             "{}: the data buffer has {} bytes but its tensors end at byte {} (trailing bytes belong to no tensor)",
             path_, data_size_, covered);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  KOFF_CHECK(it != infos_.end(), "{}: no tensor named '{}'", path_, name);
  return it->second;
}

namespace {

DType representable(const std::string& file, const std::string& name, const TensorInfo& info) {
  KOFF_CHECK(info.dtype.has_value(),
             "{}: tensor '{}' has dtype {}, which koff cannot represent (it reads F64, F32, F16, BF16, I64, I32)", file,
             name, info.dtype_name);
  return *info.dtype;
}

}  // namespace

bool SafetensorsFile::is_zero_copy(const std::string& name) const {
  const TensorInfo& i = info(name);
  const DType dtype = representable(path_, name, i);
  const auto address = reinterpret_cast<uintptr_t>(backing_->data + data_start_ + i.begin);
  return address % dtype_size(dtype) == 0;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& i = info(name);
  const DType dtype = representable(path_, name, i);
  uint8_t* bytes = backing_->data + data_start_ + i.begin;
  if (is_zero_copy(name)) {
    // The release callback does nothing itself: holding `keep` is what keeps the mapping alive.
    auto storage = std::make_shared<Storage>(bytes, i.nbytes(), Device::cpu(), [keep = backing_] {});
    return Tensor::from_storage(std::move(storage), i.shape, dtype);
  }
  Tensor t = Tensor::empty(i.shape, dtype);
  if (i.nbytes() > 0) std::memcpy(t.raw_data(), bytes, i.nbytes());
  return t;
}

Tensor SafetensorsFile::load(const std::string& name, DType dtype) const {
  const TensorInfo& i = info(name);
  const DType stored = representable(path_, name, i);
  if (is_floating(stored) || is_floating(dtype)) {
    KOFF_CHECK(is_floating(stored) && is_floating(dtype),
               "{}: tensor '{}' is {} and cannot be loaded as {} (integer and floating tensors do not convert)", path_,
               name, dtype_name(stored), dtype_name(dtype));
  } else {
    KOFF_CHECK(dtype == stored || (stored == DType::i32 && dtype == DType::i64),
               "{}: tensor '{}' is {} and cannot be loaded as {} (it would narrow)", path_, name, dtype_name(stored),
               dtype_name(dtype));
  }
  // An empty tensor has no bytes to copy (and Tensor::copy_ would memmove from a null pointer).
  if (shape_numel(i.shape) == 0) return Tensor::empty(i.shape, dtype);
  Tensor view = tensor(name);
  return dtype == stored ? view.clone() : view.to(dtype);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint
// ---------------------------------------------------------------------------------------------

namespace {

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  KOFF_CHECK(in.good(), "{}: cannot open: {}", path.string(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  KOFF_CHECK(!in.bad(), "{}: read error", path.string());
  return ss.str();
}

}  // namespace

Checkpoint::Checkpoint(const std::filesystem::path& path) : path_(path.string()) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path index, single;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "model.safetensors.index.json", ec))
      index = path / "model.safetensors.index.json";
    else if (fs::exists(path / "model.safetensors", ec))
      single = path / "model.safetensors";
    else
      fail("{}: no model.safetensors or model.safetensors.index.json in this directory", path_);
  } else if (fs::exists(path, ec)) {
    (path.extension() == ".json" ? index : single) = path;
  } else {
    fail("{}: no such file or directory", path_);
  }

  if (!single.empty()) {
    files_.emplace_back(single);
    for (const std::string& name : files_[0].names()) where_[name] = 0;
    return;
  }

  sharded_ = true;
  const std::string index_name = index.string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(index));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", index_name, e.what());
  }
  KOFF_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
             "{}: no 'weight_map' object (not a safetensors index)", index_name);
  std::map<std::string, size_t> shard_index;
  std::map<std::string, std::string> shard_of;
  for (const auto& [name, file] : j["weight_map"].items()) {
    KOFF_CHECK(file.is_string(), "{}: weight_map['{}'] is not a file name", index_name, name);
    const std::string shard = file.get<std::string>();
    // Shards live beside the index; a path elsewhere is a malformed (or hostile) index.
    KOFF_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
               "{}: weight_map['{}'] = '{}' is not a file name in the same directory", index_name, name, shard);
    shard_of[name] = shard;
    shard_index.emplace(shard, 0);
  }
  for (auto& [shard, i] : shard_index) {
    i = files_.size();
    files_.emplace_back(index.parent_path() / shard);
  }
  std::vector<std::string> missing;
  for (const auto& [name, shard] : shard_of) {
    const size_t i = shard_index.at(shard);
    if (!files_[i].has(name))
      missing.push_back(fmt::format("{} (in {})", name, shard));
    else
      where_[name] = i;
  }
  KOFF_CHECK(missing.empty(), "{}: {} tensor(s) of the weight_map are not in their shard: {}", index_name,
             missing.size(), fmt::join(missing, ", "));
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, i] : where_) out.push_back(name);
  return out;
}

const SafetensorsFile& Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  KOFF_CHECK(it != where_.end(), "{}: no tensor named '{}'", path_, name);
  return files_[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& name) const { return file_of(name).info(name); }
Tensor Checkpoint::tensor(const std::string& name) const { return file_of(name).tensor(name); }
Tensor Checkpoint::load(const std::string& name, DType dtype) const { return file_of(name).load(name, dtype); }

// ---------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------

void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors, const Metadata& metadata) {
  const std::string file = path.string();
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    KOFF_CHECK(name != "__metadata__", "{}: '__metadata__' is reserved and cannot name a tensor", file);
    KOFF_CHECK(seen.insert(name).second, "{}: tensor '{}' given twice", file, name);
    KOFF_CHECK(t.defined(), "{}: tensor '{}' is undefined", file, name);
  }
  // Larger elements first, so that every offset is a multiple of its element size (the reference
  // writer orders by dtype for the same reason); stable, so the caller's order holds within a size.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    const uint64_t nbytes = t.nbytes();
    header[tensors[i].first] = {
        {"dtype", safetensors_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  AtomicFile out(path);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t(text.size()) >> (8 * i));
  out.write(len, 8);
  out.write(text);
  for (size_t i : order) {
    const Tensor host = tensors[i].second.to(Device::cpu()).contiguous();
    if (host.nbytes() > 0) out.write(host.raw_data(), host.nbytes());
  }
  out.commit();
}

namespace {

// The names save_sharded writes: model.safetensors, model.safetensors.index.json and
// model-NNNNN-of-NNNNN.safetensors (the only files it ever removes).
bool is_weights_file_name(const std::string& name) {
  if (name == "model.safetensors" || name == "model.safetensors.index.json") return true;
  const std::string pattern = "model-#####-of-#####.safetensors";
  if (name.size() != pattern.size()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (pattern[i] == '#' ? !std::isdigit(static_cast<unsigned char>(name[i])) : name[i] != pattern[i]) return false;
  return true;
}

}  // namespace

void save_sharded(const std::filesystem::path& dir, const NamedTensors& tensors, uint64_t max_shard_bytes,
                  const Metadata& metadata) {
  namespace fs = std::filesystem;
  KOFF_CHECK(max_shard_bytes > 0, "{}: max_shard_bytes must be positive", dir.string());
  std::error_code ec;
  fs::create_directories(dir, ec);
  KOFF_CHECK(fs::is_directory(dir), "{}: cannot create directory: {}", dir.string(), ec.message());

  // Greedy in the given order, as transformers/huggingface_hub shard a state dict.
  std::vector<NamedTensors> shards(1);
  uint64_t current = 0;
  for (const auto& nt : tensors) {
    const uint64_t nbytes = nt.second.defined() ? nt.second.nbytes() : 0;
    if (!shards.back().empty() && current + nbytes > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(nt);
    current += nbytes;
  }

  std::set<std::string> written;
  if (shards.size() == 1) {
    save_safetensors(dir / "model.safetensors", shards[0], metadata);
    written.insert("model.safetensors");
  } else {
    nlohmann::json weight_map = nlohmann::json::object();
    uint64_t total = 0;
    for (size_t k = 0; k < shards.size(); ++k) {
      const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, shards.size());
      save_safetensors(dir / name, shards[k], metadata);
      written.insert(name);
      for (const auto& [tname, t] : shards[k]) {
        KOFF_CHECK(!weight_map.contains(tname), "{}: tensor '{}' given twice", dir.string(), tname);
        weight_map[tname] = name;
        total += t.nbytes();
      }
    }
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
    // Written last: until it is in place, a reader sees the previous layout rather than a partial one.
    write_file_atomic(dir / "model.safetensors.index.json", index.dump(2) + "\n");
    written.insert("model.safetensors.index.json");
  }

  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && is_weights_file_name(name) && !written.count(name)) fs::remove(entry.path());
  }
}

}  // namespace koff::io
