// GGUF: the file format of llama.cpp / ggml (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
//
// Layout (all little-endian):
//   u32 magic "GGUF" | u32 version (2 or 3) | u64 tensor_count | u64 kv_count
//   kv_count x { string key | u32 value_type | value }           (metadata)
//   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32) | tensor data (each offset relative to here, aligned)
// A string is u64 length + bytes (no terminator); an array is u32 element type + u64 count + elements.
// ne[0] is the fastest-varying dimension: a PyTorch/koff shape is ne reversed.
//
// Quantised types store blocks: `block_size` values in `type_size` bytes (Q8_0: 32 values as one f16
// scale and 32 int8; Q4_K: 256 values in 144 bytes; ...), so ne[0] must be a multiple of the block.
// This reader dequantises F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K to f32;
// every other ggml type is known by name and size (the file still validates) and gives a clear error
// only when its values are asked for. A type id ggml does not define is an error at open.
//
// Validation is strict, as for safetensors: the header must fit the file, counts and string lengths
// must be possible for the bytes that remain, keys and tensor names unique, dims at most 4 and
// positive, every tensor's bytes aligned, inside the data section and not overlapping another's.
// Every error is one koff::Error naming the file (and the key or tensor).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/io/model_config.h"
#include "engine/tensor/tensor.h"

namespace koff::io {

enum class GgufValueType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9,
  u64 = 10, i64 = 11, f64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

// One metadata value. Integers of every width are held as i64/u64, floats as f64; arrays hold
// their elements (array_type says which type they were in the file).
struct GgufValue {
  GgufValueType type = GgufValueType::u8;
  GgufValueType array_type = GgufValueType::u8;  // arrays only
  uint64_t u = 0;                                 // unsigned integers and bool
  int64_t i = 0;                                  // signed integers
  double f = 0;                                   // floats
  std::string s;                                  // strings
  std::vector<GgufValue> array;

  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::f32 || type == GgufValueType::f64; }
  // Typed reads: `what` (the key) names the value in the error when the type does not fit.
  int64_t as_int(const std::string& what) const;  // any integer type that fits in i64
  double as_double(const std::string& what) const;  // any integer or float
  bool as_bool(const std::string& what) const;
  const std::string& as_string(const std::string& what) const;
  const std::vector<GgufValue>& as_array(const std::string& what) const;
  std::string to_string(size_t max_elements = 8) const;  // for `koff inspect`
};

// ggml's tensor types: name, values per block, bytes per block.
struct GgmlType {
  uint32_t id;
  const char* name;
  int64_t block_size;
  int64_t type_size;
  bool dequantizable;  // this reader turns it into f32
};
// nullptr for an id ggml does not define (or one it has retired).
const GgmlType* ggml_type(uint32_t id);
// Every defined type, for tests and messages.
const std::vector<GgmlType>& ggml_types();

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] fastest
  uint32_t type = 0;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;
  Shape shape() const { return Shape(ne.rbegin(), ne.rend()); }
  int64_t numel() const;
};

// Dequantises n values (a whole number of blocks) of ggml type `type` from `src` into dst.
void dequantize(uint32_t type, const uint8_t* src, float* dst, int64_t n);

class GgufFile {
 public:
  // Maps the file read-only and validates everything but the tensor values.
  explicit GgufFile(const std::filesystem::path& path);
  // The same over bytes in memory (tests, fuzzing); `name` stands in for the path in errors.
  static GgufFile from_bytes(std::string bytes, std::string name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::vector<std::string>& keys() const { return key_order_; }  // in file order
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  const GgufValue& get(const std::string& key) const;  // error naming the key when absent
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool has_tensor(const std::string& name) const { return tensor_index_.count(name) != 0; }
  const GgufTensorInfo& tensor_info(const std::string& name) const;
  // The tensor's values as f32 in the koff shape (ne reversed); an error for a type this reader
  // cannot dequantise.
  Tensor dequantize(const std::string& name) const;
  const uint8_t* raw(const GgufTensorInfo& info) const;

 private:
  struct Backing;
  GgufFile() = default;
  void parse();

  std::string path_;
  std::shared_ptr<Backing> backing_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32, data_start_ = 0;
  std::vector<std::string> key_order_;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// --- models ---------------------------------------------------------------------------------------

// Whether `path` names a GGUF file (by its magic; a directory or a missing file is not one).
bool is_gguf(const std::filesystem::path& path);

// The model config from the metadata (`general.architecture` llama, qwen2 or qwen3, and its
// `<arch>.*` sizes); tied embeddings when the file has no `output.weight`. An architecture koff
// does not run, a missing key, or RoPE scaling it does not implement is one clear error.
ModelConfig gguf_model_config(const GgufFile& file);

// Every weight under its Hugging Face name (model.layers.N.self_attn.q_proj.weight, ...), dequantised
// and converted to `dtype`. llama.cpp's converter interleaves the rows of q_proj and k_proj of a
// "llama" model for its RoPE kernel (rows (i, j) of a head stored as (j, i) for the two halves of
// head_dim); that permutation is undone here, so the weights run with koff's (= Hugging Face's)
// rotate-half RoPE. Shapes are checked against the config first: every tensor whose shape
// contradicts the metadata, every missing and every unknown tensor is listed in one error.
std::vector<std::pair<std::string, Tensor>> gguf_model_tensors(const GgufFile& file, const ModelConfig& config,
                                                               DType dtype);

// A tokenizer.json equivalent to the tokenizer described by `tokenizer.ggml.*` (byte-level BPE,
// tokenizer.ggml.model == "gpt2": Llama 3, Qwen, SmolLM2, GPT-2): vocabulary, merges, control tokens
// as special added tokens, user-defined tokens as added tokens, and the pre-tokenizer named by
// tokenizer.ggml.pre. It is the tokenizer that transformers builds from the same file.
nlohmann::json gguf_tokenizer_json(const GgufFile& file);

}  // namespace koff::io
