// safetensors: reader (mmap, zero-copy views, full header validation), writer, sharded checkpoints.
//
// Format (https://github.com/huggingface/safetensors): 8 bytes little-endian u64 N, N bytes of JSON
// header, then the data buffer. The header maps each tensor name to
//   {"dtype": "BF16", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
// (offsets relative to the data buffer) plus an optional "__metadata__" string->string map.
//
// The reader validates what the reference implementation validates, so that a file it accepts is one
// that `safetensors` accepts too: N within the file and at most 100 MB; the header a JSON object (of
// UTF-8 text); every entry well-formed with a known dtype; end - begin == numel * dtype size; and the
// tensors tiling the data buffer exactly, with no overlap, no hole and no trailing byte (the
// reference rejects holes so that no unindexed payload can hide in a file). Duplicate names are an
// error too (JSON parsers silently keep one of them). Every error is one koff::Error that names the
// file, and the tensor where there is one.
//
// Dtypes: F64, F32, F16, BF16, I64 and I32 become koff dtypes. The other dtypes of the format (BOOL,
// U8, I8, I16, U16, U32, U64, F8_*, F4, F6_*) are parsed and validated, listed by names() and info(),
// and give a clear error only when a tensor of one of them is asked for; a string that is not a
// safetensors dtype at all is an error when the file is opened.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor/tensor.h"

namespace koff::io {

// One tensor of the header.
struct TensorInfo {
  std::string dtype_name;      // as in the file: "BF16", "F32", "U8", ...
  std::optional<DType> dtype;  // the koff dtype, absent when koff cannot represent it
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets in the data buffer
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps the file (MAP_PRIVATE: copy-on-write, never written back) and validates the header.
  explicit SafetensorsFile(const std::filesystem::path& path);
  // The same from bytes in memory (an embedded model, fuzzing). `name` stands in for the path in errors.
  static SafetensorsFile from_bytes(std::string bytes, std::string name);

  const std::string& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }  // in data-offset order
  bool has(const std::string& name) const { return infos_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t data_size() const { return data_size_; }

  // A CPU tensor viewing the mapped bytes: no copy, and the mapping stays alive for as long as any
  // such tensor (or this object) does. The mapping is private and writable (copy-on-write): writing
  // into a view changes this process's copy only, never the file.
  // Exception: when the bytes are not aligned to the element size (only a writer other than ours or
  // the reference one produces that), the view would break the alignment rules of C++ and of SIMD
  // kernels, so tensor() returns an aligned copy instead. is_zero_copy() tells which.
  Tensor tensor(const std::string& name) const;
  bool is_zero_copy(const std::string& name) const;
  // A fresh copy in `dtype` owning its memory (the mapping can go). Floating tensors convert to any
  // floating dtype (bf16 -> f32 is exact); integer tensors load only as integers (i32 -> i64 widens),
  // since a silent integer -> float conversion would round large values.
  Tensor load(const std::string& name, DType dtype) const;

 private:
  struct Backing;  // the mapped (or owned) bytes; shared with every view
  SafetensorsFile() = default;
  void parse();

  std::string path_;
  std::shared_ptr<Backing> backing_;
  uint64_t data_start_ = 0, data_size_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// A model's weights on disk: a directory with model.safetensors, or with model.safetensors.index.json
// and the shards it names ({"weight_map": {tensor: file}}); also a single .safetensors file or an
// index file given directly. Every shard is opened (and its header validated) up front.
class Checkpoint {
 public:
  explicit Checkpoint(const std::filesystem::path& path);

  const std::string& path() const { return path_; }
  bool is_sharded() const { return sharded_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  Tensor tensor(const std::string& name) const;  // zero-copy view (see SafetensorsFile::tensor)
  Tensor load(const std::string& name, DType dtype) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  std::string path_;
  bool sharded_ = false;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor -> index into files_
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using Metadata = std::map<std::string, std::string>;

// Writes one safetensors file atomically (AtomicFile). Tensors keep their dtype (f64, f32, f16,
// bf16, i64, i32; any device, any strides). Layout as the reference writer makes it: header padded
// with spaces to a multiple of 8 bytes, so that with the data ordered by descending element size
// (stable: the given order within one size) every tensor is aligned for zero-copy reading. Duplicate
// names are an error.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors, const Metadata& metadata = {});

// Writes a Hugging Face model directory's weights: shards filled in the given order up to
// max_shard_bytes each (a tensor larger than that gets a shard of its own), named
// model-0000K-of-0000N.safetensors, plus model.safetensors.index.json with metadata.total_size (the
// sum of tensor bytes) and the weight_map. A single shard is written as model.safetensors with no
// index, as transformers' save_pretrained does. Files of an earlier save in that layout that the new
// one does not use are removed afterwards, so that no stale index or shard can be read back. The
// default metadata {"format": "pt"} is what transformers requires to load the files.
void save_sharded(const std::filesystem::path& dir, const NamedTensors& tensors, uint64_t max_shard_bytes,
                  const Metadata& metadata = {{"format", "pt"}});

}  // namespace koff::io
