#include "engine/io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

namespace koff::io {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

namespace {

// Bounds that no real file comes near and that keep a lying header from making us allocate or loop
// far: the reader checks each count against the bytes that remain as well.
constexpr uint64_t kMaxStringBytes = 1ull << 30;
constexpr int kMaxArrayDepth = 4;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(f16{h});
}

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8: return "UINT8";
    case GgufValueType::i8: return "INT8";
    case GgufValueType::u16: return "UINT16";
    case GgufValueType::i16: return "INT16";
    case GgufValueType::u32: return "UINT32";
    case GgufValueType::i32: return "INT32";
    case GgufValueType::f32: return "FLOAT32";
    case GgufValueType::boolean: return "BOOL";
    case GgufValueType::string: return "STRING";
    case GgufValueType::array: return "ARRAY";
    case GgufValueType::u64: return "UINT64";
    case GgufValueType::i64: return "INT64";
    case GgufValueType::f64: return "FLOAT64";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------------

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::u16: case GgufValueType::i16:
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::u64: case GgufValueType::i64:
      return true;
    default:
      return false;
  }
}

namespace {
bool is_unsigned(GgufValueType t) {
  return t == GgufValueType::u8 || t == GgufValueType::u16 || t == GgufValueType::u32 || t == GgufValueType::u64;
}
}  // namespace

int64_t GgufValue::as_int(const std::string& what) const {
  KOFF_CHECK(is_integer(), "{} must be an integer, got {}", what, gguf_value_type_name(type));
  if (is_unsigned(type)) {
    KOFF_CHECK(u <= static_cast<uint64_t>(INT64_MAX), "{} = {} is out of range", what, u);
    return static_cast<int64_t>(u);
  }
  return i;
}

double GgufValue::as_double(const std::string& what) const {
  if (is_float()) return f;
  KOFF_CHECK(is_integer(), "{} must be a number, got {}", what, gguf_value_type_name(type));
  return is_unsigned(type) ? static_cast<double>(u) : static_cast<double>(i);
}

bool GgufValue::as_bool(const std::string& what) const {
  KOFF_CHECK(type == GgufValueType::boolean, "{} must be a BOOL, got {}", what, gguf_value_type_name(type));
  return u != 0;
}

const std::string& GgufValue::as_string(const std::string& what) const {
  KOFF_CHECK(type == GgufValueType::string, "{} must be a STRING, got {}", what, gguf_value_type_name(type));
  return s;
}

const std::vector<GgufValue>& GgufValue::as_array(const std::string& what) const {
  KOFF_CHECK(type == GgufValueType::array, "{} must be an ARRAY, got {}", what, gguf_value_type_name(type));
  return array;
}

std::string GgufValue::to_string(size_t max_elements) const {
  switch (type) {
    case GgufValueType::string: {
      std::string t = s.size() > 80 ? s.substr(0, 77) + "..." : s;
      for (char& c : t)
        if (c == '\n') c = ' ';
      return fmt::format("\"{}\"", t);
    }
    case GgufValueType::boolean: return u ? "true" : "false";
    case GgufValueType::f32: case GgufValueType::f64: return fmt::format("{}", f);
    case GgufValueType::array: {
      std::string out = fmt::format("[{} x {}:", array.size(), gguf_value_type_name(array_type));
      for (size_t k = 0; k < array.size() && k < max_elements; ++k) {
        out += ' ';
        out += array[k].to_string(0);
      }
      return out + (array.size() > max_elements ? " ...]" : "]");
    }
    default: return is_unsigned(type) ? fmt::format("{}", u) : fmt::format("{}", i);
  }
}

// ---------------------------------------------------------------------------------------------------
// ggml types and dequantisation
// ---------------------------------------------------------------------------------------------------

const std::vector<GgmlType>& ggml_types() {
  // Sizes as in gguf-py's GGML_QUANT_SIZES (the reference reader); ids are ggml's enum ggml_type.
  static const std::vector<GgmlType> types = {
      {0, "F32", 1, 4, true},         {1, "F16", 1, 2, true},        {2, "Q4_0", 32, 18, true},
      {3, "Q4_1", 32, 20, true},      {6, "Q5_0", 32, 22, true},     {7, "Q5_1", 32, 24, true},
      {8, "Q8_0", 32, 34, true},      {9, "Q8_1", 32, 40, false},    {10, "Q2_K", 256, 84, false},
      {11, "Q3_K", 256, 110, false},  {12, "Q4_K", 256, 144, true},  {13, "Q5_K", 256, 176, true},
      {14, "Q6_K", 256, 210, true},   {15, "Q8_K", 256, 292, false}, {16, "IQ2_XXS", 256, 66, false},
      {17, "IQ2_XS", 256, 74, false}, {18, "IQ3_XXS", 256, 98, false}, {19, "IQ1_S", 256, 50, false},
      {20, "IQ4_NL", 32, 18, false},  {21, "IQ3_S", 256, 110, false}, {22, "IQ2_S", 256, 82, false},
      {23, "IQ4_XS", 256, 136, false}, {24, "I8", 1, 1, false},      {25, "I16", 1, 2, false},
      {26, "I32", 1, 4, false},       {27, "I64", 1, 8, false},      {28, "F64", 1, 8, true},
      {29, "IQ1_M", 256, 56, false},  {30, "BF16", 1, 2, true},      {34, "TQ1_0", 256, 54, false},
      {35, "TQ2_0", 256, 66, false},  {39, "MXFP4", 32, 17, false},
  };
  return types;
}

const GgmlType* ggml_type(uint32_t id) {
  for (const auto& t : ggml_types())
    if (t.id == id) return &t;
  return nullptr;
}

namespace {

// Q4_K / Q5_K: eight 6-bit (scale, min) pairs packed into 12 bytes.
inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// One block of each type -> its block_size floats. Formulas as ggml's dequantize_row_*.
void block_q4_0(const uint8_t* b, float* y) {  // f16 d | 16 bytes of nibble pairs; x = (q - 8) d
  const float d = half_to_float(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0xF) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}
void block_q4_1(const uint8_t* b, float* y) {  // f16 d | f16 m | nibbles; x = q d + m
  const float d = half_to_float(b), m = half_to_float(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0xF) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}
void block_q5_0(const uint8_t* b, float* y) {  // f16 d | u32 fifth bits | nibbles; x = (q - 16) d
  const float d = half_to_float(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int x0 = (qs[j] & 0xF) | (((qh >> j) << 4) & 0x10);
    const int x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>(x0 - 16) * d;
    y[j + 16] = static_cast<float>(x1 - 16) * d;
  }
}
void block_q5_1(const uint8_t* b, float* y) {  // f16 d | f16 m | u32 fifth bits | nibbles; x = q d + m
  const float d = half_to_float(b), m = half_to_float(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int x0 = (qs[j] & 0xF) | (((qh >> j) << 4) & 0x10);
    const int x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
    y[j] = static_cast<float>(x0) * d + m;
    y[j + 16] = static_cast<float>(x1) * d + m;
  }
}
void block_q8_0(const uint8_t* b, float* y) {  // f16 d | 32 x i8; x = q d
  const float d = half_to_float(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}
void block_q4_k(const uint8_t* b, float* y) {  // f16 d | f16 dmin | scales[12] | qs[128]
  const float d = half_to_float(b), dmin = half_to_float(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  int is = 0, sc, m;
  for (int j = 0; j < 256; j += 64) {
    scale_min_k4(is, scales, &sc, &m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}
void block_q5_k(const uint8_t* b, float* y) {  // f16 d | f16 dmin | scales[12] | qh[32] | qs[128]
  const float d = half_to_float(b), dmin = half_to_float(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  int is = 0, sc, m;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < 256; j += 64) {
    scale_min_k4(is, scales, &sc, &m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}
void block_q6_k(const uint8_t* b, float* y) {  // ql[128] | qh[64] | i8 scales[16] | f16 d
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_to_float(b + 208);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

}  // namespace

void dequantize(uint32_t type, const uint8_t* src, float* dst, int64_t n) {
  const GgmlType* t = ggml_type(type);
  KOFF_CHECK(t != nullptr, "unknown ggml type {}", type);
  KOFF_CHECK(t->dequantizable, "ggml type {} cannot be dequantised by koff (supported: F32 F16 BF16 F64 Q4_0 Q4_1 "
             "Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K)", t->name);
  KOFF_CHECK(n % t->block_size == 0, "{} values are not a whole number of {} blocks of {}", n, t->name, t->block_size);
  const int64_t blocks = n / t->block_size;
  using BlockFn = void (*)(const uint8_t*, float*);
  BlockFn fn = nullptr;
  switch (type) {
    case 0: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case 1:
      for (int64_t k = 0; k < n; ++k) dst[k] = half_to_float(src + 2 * k);
      return;
    case 30:
      for (int64_t k = 0; k < n; ++k) {
        uint16_t h;
        std::memcpy(&h, src + 2 * k, 2);
        dst[k] = bf16_to_f32(bf16{h});
      }
      return;
    case 28:
      for (int64_t k = 0; k < n; ++k) {
        double v;
        std::memcpy(&v, src + 8 * k, 8);
        dst[k] = static_cast<float>(v);
      }
      return;
    case 2: fn = block_q4_0; break;
    case 3: fn = block_q4_1; break;
    case 6: fn = block_q5_0; break;
    case 7: fn = block_q5_1; break;
    case 8: fn = block_q8_0; break;
    case 12: fn = block_q4_k; break;
    case 13: fn = block_q5_k; break;
    case 14: fn = block_q6_k; break;
    default: fail("ggml type {} has no dequantiser", t->name);
  }
#pragma omp parallel for schedule(static) if (blocks >= 4096)
  for (int64_t b = 0; b < blocks; ++b) fn(src + b * t->type_size, dst + b * t->block_size);
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------------

struct GgufFile::Backing {
  const uint8_t* data = nullptr;
  size_t size = 0;
  void* map = nullptr;
  std::string owned;
  Backing() = default;
  Backing(const Backing&) = delete;
  Backing& operator=(const Backing&) = delete;
  ~Backing() {
    if (map) ::munmap(map, size);
  }
};

GgufFile::GgufFile(const std::filesystem::path& path) : path_(path.string()) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KOFF_CHECK(fd >= 0, "{}: cannot open: {}", path_, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path_);
  }
  const size_t size = static_cast<size_t>(st.st_size);
  backing_ = std::make_shared<Backing>();
  if (size > 0) {
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    KOFF_CHECK(map != MAP_FAILED, "{}: cannot mmap {} bytes: {}", path_, size, std::strerror(err));
    backing_->map = map;
    backing_->data = static_cast<const uint8_t*>(map);
    backing_->size = size;
  } else {
    ::close(fd);
  }
  parse();
}

GgufFile GgufFile::from_bytes(std::string bytes, std::string name) {
  GgufFile f;
  f.path_ = std::move(name);
  f.backing_ = std::make_shared<Backing>();
  f.backing_->owned = std::move(bytes);
  f.backing_->data = reinterpret_cast<const uint8_t*>(f.backing_->owned.data());
  f.backing_->size = f.backing_->owned.size();
  f.parse();
  return f;
}

namespace {

// A bounds-checked little-endian cursor: every read that would pass the end is a "truncated" error
// naming what was being read.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& file) : data_(data), size_(size), file_(file) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what.c_str());
    KOFF_CHECK(n <= kMaxStringBytes && n <= remaining(),
               "{}: truncated or corrupt: {} claims {} bytes but {} remain in the file", file_, what, n, remaining());
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  void need(size_t n, const char* what) const {
    KOFF_CHECK(n <= remaining(), "{}: truncated: the file ends inside {} (offset {}, {} bytes of {} left)", file_, what,
               pos_, remaining(), size_);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& file_;
};

// The smallest number of bytes a value of this type takes; bounds element counts of arrays.
uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::boolean: return 1;
    case GgufValueType::u16: case GgufValueType::i16: return 2;
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::f32: return 4;
    case GgufValueType::u64: case GgufValueType::i64: case GgufValueType::f64: case GgufValueType::string: return 8;
    case GgufValueType::array: return 12;
  }
  return 1;
}

bool valid_value_type(uint32_t t) { return t <= 12; }

GgufValue read_value(Cursor& c, GgufValueType type, const std::string& key, const std::string& file, int depth) {
  GgufValue v;
  v.type = type;
  const std::string what = fmt::format("the value of '{}'", key);
  switch (type) {
    case GgufValueType::u8: v.u = c.read<uint8_t>(what.c_str()); break;
    case GgufValueType::i8: v.i = c.read<int8_t>(what.c_str()); break;
    case GgufValueType::u16: v.u = c.read<uint16_t>(what.c_str()); break;
    case GgufValueType::i16: v.i = c.read<int16_t>(what.c_str()); break;
    case GgufValueType::u32: v.u = c.read<uint32_t>(what.c_str()); break;
    case GgufValueType::i32: v.i = c.read<int32_t>(what.c_str()); break;
    case GgufValueType::u64: v.u = c.read<uint64_t>(what.c_str()); break;
    case GgufValueType::i64: v.i = c.read<int64_t>(what.c_str()); break;
    case GgufValueType::f32: v.f = c.read<float>(what.c_str()); break;
    case GgufValueType::f64: v.f = c.read<double>(what.c_str()); break;
    case GgufValueType::boolean: {
      const uint8_t b = c.read<uint8_t>(what.c_str());
      KOFF_CHECK(b <= 1, "{}: '{}' is a BOOL with byte value {} (must be 0 or 1)", file, key, b);
      v.u = b;
      break;
    }
    case GgufValueType::string: v.s = c.string(what); break;
    case GgufValueType::array: {
      KOFF_CHECK(depth < kMaxArrayDepth, "{}: '{}' nests arrays deeper than {}", file, key, kMaxArrayDepth);
      const uint32_t et = c.read<uint32_t>(what.c_str());
      KOFF_CHECK(valid_value_type(et), "{}: '{}' is an array of unknown value type {}", file, key, et);
      v.array_type = static_cast<GgufValueType>(et);
      const uint64_t n = c.read<uint64_t>(what.c_str());
      KOFF_CHECK(n <= c.remaining() / min_value_bytes(v.array_type),
                 "{}: truncated or corrupt: '{}' claims {} elements but only {} bytes remain", file, key, n,
                 c.remaining());
      v.array.reserve(n);
      for (uint64_t k = 0; k < n; ++k) v.array.push_back(read_value(c, v.array_type, key, file, depth + 1));
      break;
    }
  }
  return v;
}

}  // namespace

void GgufFile::parse() {
  const uint8_t* bytes = backing_->data;
  const size_t size = backing_->size;
  KOFF_CHECK(size >= 4 && std::memcmp(bytes, "GGUF", 4) == 0, "{}: not a GGUF file (no \"GGUF\" magic at the start)",
             path_);
  Cursor c(bytes, size, path_);
  c.read<uint32_t>("the magic");
  version_ = c.read<uint32_t>("the version");
  KOFF_CHECK(version_ == 2 || version_ == 3, "{}: GGUF version {} is not supported (koff reads versions 2 and 3)",
             path_, version_);
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // A key/value takes at least 8 + 4 + 1 bytes, a tensor info at least 8 + 4 + 8 + 4 + 8.
  KOFF_CHECK(n_kv <= c.remaining() / 13, "{}: corrupt header: {} metadata entries cannot fit in {} bytes", path_,
             n_kv, size);
  KOFF_CHECK(n_tensors <= c.remaining() / 32, "{}: corrupt header: {} tensors cannot fit in {} bytes", path_,
             n_tensors, size);

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.string(fmt::format("the key of metadata entry {}", k));
    const uint32_t t = c.read<uint32_t>("a metadata value type");
    KOFF_CHECK(valid_value_type(t), "{}: metadata '{}' has unknown value type {}", path_, key, t);
    GgufValue v = read_value(c, static_cast<GgufValueType>(t), key, path_, 0);
    KOFF_CHECK(!metadata_.count(key), "{}: metadata key '{}' appears twice", path_, key);
    key_order_.push_back(key);
    metadata_.emplace(std::move(key), std::move(v));
  }
  if (has("general.alignment")) {
    const int64_t a = get("general.alignment").as_int(path_ + ": general.alignment");
    KOFF_CHECK(a > 0 && (a & (a - 1)) == 0 && a <= 65536, "{}: general.alignment {} is not a power of two", path_, a);
    alignment_ = static_cast<uint64_t>(a);
  }

  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo info;
    info.name = c.string(fmt::format("the name of tensor {}", k));
    KOFF_CHECK(!info.name.empty(), "{}: tensor {} has an empty name", path_, k);
    const uint32_t n_dims = c.read<uint32_t>("a tensor's dimension count");
    KOFF_CHECK(n_dims >= 1 && n_dims <= kMaxDims, "{}: tensor '{}' has {} dimensions (GGUF allows 1 to {})", path_,
               info.name, n_dims, kMaxDims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.read<uint64_t>("a tensor dimension");
      KOFF_CHECK(ne >= 1 && ne <= (1ull << 40) && numel <= (1ull << 48) / ne,
                 "{}: tensor '{}' has an impossible dimension {} = {}", path_, info.name, d, ne);
      numel *= ne;
      info.ne.push_back(static_cast<int64_t>(ne));
    }
    info.type = c.read<uint32_t>("a tensor type");
    const GgmlType* t = ggml_type(info.type);
    KOFF_CHECK(t != nullptr, "{}: tensor '{}' has unknown ggml type {}", path_, info.name, info.type);
    KOFF_CHECK(info.ne[0] % t->block_size == 0,
               "{}: tensor '{}' of type {} has a first dimension {} that is not a multiple of its block size {}", path_,
               info.name, t->name, info.ne[0], t->block_size);
    info.nbytes = numel / static_cast<uint64_t>(t->block_size) * static_cast<uint64_t>(t->type_size);
    info.offset = c.read<uint64_t>("a tensor offset");
    KOFF_CHECK(info.offset % alignment_ == 0, "{}: tensor '{}' at offset {} is not aligned to {}", path_, info.name,
               info.offset, alignment_);
    KOFF_CHECK(!tensor_index_.count(info.name), "{}: tensor '{}' appears twice", path_, info.name);
    tensor_index_[info.name] = tensors_.size();
    tensors_.push_back(std::move(info));
  }

  data_start_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_size = data_start_ <= size ? size - data_start_ : 0;
  // Every tensor inside the data section, none overlapping another.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  uint64_t end = 0;
  for (const auto* t : by_offset) {
    KOFF_CHECK(t->offset <= data_size && t->nbytes <= data_size - t->offset,
               "{}: truncated: tensor '{}' needs bytes {}..{} of the data section, which has {}", path_, t->name,
               t->offset, t->offset + t->nbytes, data_size);
    KOFF_CHECK(t->offset >= end, "{}: tensor '{}' overlaps the tensor before it", path_, t->name);
    end = t->offset + t->nbytes;
  }
}

const GgufValue& GgufFile::get(const std::string& key) const {
  auto it = metadata_.find(key);
  KOFF_CHECK(it != metadata_.end(), "{}: metadata key '{}' is missing", path_, key);
  return it->second;
}

const GgufTensorInfo& GgufFile::tensor_info(const std::string& name) const {
  auto it = tensor_index_.find(name);
  KOFF_CHECK(it != tensor_index_.end(), "{}: no tensor '{}'", path_, name);
  return tensors_[it->second];
}

const uint8_t* GgufFile::raw(const GgufTensorInfo& info) const { return backing_->data + data_start_ + info.offset; }

Tensor GgufFile::dequantize(const std::string& name) const {
  const GgufTensorInfo& info = tensor_info(name);
  const GgmlType* t = ggml_type(info.type);
  KOFF_CHECK(t->dequantizable,
             "{}: tensor '{}' is of ggml type {}, which koff cannot dequantise (supported: F32 F16 BF16 F64 Q4_0 Q4_1 "
             "Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K)",
             path_, name, t->name);
  Tensor out = Tensor::empty(info.shape(), DType::f32);
  io::dequantize(info.type, raw(info), out.data<float>(), info.numel());
  for (int64_t k = 0, n = info.numel(); k < n; ++k)
    KOFF_CHECK(std::isfinite(out.data<float>()[k]), "{}: tensor '{}' holds a non-finite value at element {}", path_,
               name, k);
  return out;
}

bool is_gguf(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace koff::io
