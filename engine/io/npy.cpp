#include "engine/io/npy.h"

#include <bit>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

#include "engine/io/atomic_file.h"

namespace koff::io {

namespace {

static_assert(std::endian::native == std::endian::little, ".npy I/O assumes a little-endian host");

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes
constexpr size_t kAlign = 64;           // numpy's ARRAY_ALIGN

const char* descr_of(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "<f4";
    case DType::f64:
      return "<f8";
    case DType::f16:
      return "<f2";
    case DType::i32:
      return "<i4";
    case DType::i64:
      return "<i8";
    case DType::bf16:
      break;
  }
  return nullptr;
}

}  // namespace

void save_npy(const std::filesystem::path& path, const Tensor& tensor) {
  const std::string file = path.string();
  KOFF_CHECK(tensor.defined(), "{}: cannot save an undefined tensor", file);
  const char* descr = descr_of(tensor.dtype());
  KOFF_CHECK(descr != nullptr, "{}: dtype {} has no NumPy equivalent; convert to f32 first", file,
             dtype_name(tensor.dtype()));
  // Python's repr of the shape tuple: "()", "(3,)", "(2, 3)".
  std::string shape = "(";
  for (size_t i = 0; i < tensor.shape().size(); ++i) shape += (i ? ", " : "") + std::to_string(tensor.shape()[i]);
  if (tensor.shape().size() == 1) shape += ",";
  shape += ")";
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr, shape);
  // numpy._wrap_header: pad so that magic (6) + version (2) + length (2) + header + '\n' is a multiple
  // of 64; numpy pads by 1..64 spaces (never 0), and so do we, to write the same bytes.
  const size_t preamble = 10;
  const size_t padding = kAlign - (preamble + header.size() + 1) % kAlign;
  header.append(padding, ' ');
  header += '\n';
  KOFF_CHECK(header.size() <= 65535, "{}: shape {} is too long for a version 1.0 header", file,
             shape_str(tensor.shape()));

  AtomicFile out(path);
  out.write(kMagic, 6);
  const uint8_t version_and_length[4] = {1, 0, static_cast<uint8_t>(header.size() & 0xff),
                                         static_cast<uint8_t>(header.size() >> 8)};
  out.write(version_and_length, 4);
  out.write(header);
  const Tensor host = tensor.to(Device::cpu()).contiguous();
  if (host.nbytes() > 0) out.write(host.raw_data(), host.nbytes());
  out.commit();
}

Tensor load_npy(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  KOFF_CHECK(in.good(), "{}: cannot open", file);
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  KOFF_CHECK(bytes.size() >= 10 && std::memcmp(bytes.data(), kMagic, 6) == 0, "{}: not a .npy file", file);
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | size_t(static_cast<uint8_t>(bytes[9])) << 8;
    header_start = 10;
  } else if (major == 2 || major == 3) {
    KOFF_CHECK(bytes.size() >= 12, "{}: truncated header", file);
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[8 + i]);
    header_start = 12;
  } else {
    fail("{}: unsupported .npy version {}", file, major);
  }
  KOFF_CHECK(header_start + header_len <= bytes.size(), "{}: truncated header", file);
  const std::string header = bytes.substr(header_start, header_len);

  // The header is a Python dict literal written by numpy; we read the three keys it always has.
  auto value_of = [&](const std::string& key) -> std::string_view {
    const size_t k = header.find("'" + key + "'");
    KOFF_CHECK(k != std::string::npos, "{}: header has no '{}'", file, key);
    size_t v = header.find(':', k);
    KOFF_CHECK(v != std::string::npos, "{}: malformed header", file);
    v = header.find_first_not_of(' ', v + 1);
    KOFF_CHECK(v != std::string::npos, "{}: malformed header", file);
    return std::string_view(header).substr(v);
  };
  std::string_view descr = value_of("descr");
  const size_t close = descr.find('\'', 1);
  KOFF_CHECK(descr.size() > 1 && descr[0] == '\'' && close != std::string_view::npos, "{}: malformed descr", file);
  descr = descr.substr(1, close - 1);
  DType dtype;
  if (descr == "<f4")
    dtype = DType::f32;
  else if (descr == "<f8")
    dtype = DType::f64;
  else if (descr == "<f2")
    dtype = DType::f16;
  else if (descr == "<i4")
    dtype = DType::i32;
  else if (descr == "<i8")
    dtype = DType::i64;
  else
    fail("{}: dtype '{}' is not supported (little-endian f2/f4/f8/i4/i8)", file, descr);
  KOFF_CHECK(value_of("fortran_order").starts_with("False"), "{}: Fortran-order arrays are not supported", file);
  std::string_view dims = value_of("shape");
  const size_t rparen = dims.find(')');
  KOFF_CHECK(dims.starts_with("(") && rparen != std::string_view::npos, "{}: malformed shape", file);
  dims = dims.substr(1, rparen - 1);
  Shape shape;
  while (!dims.empty()) {
    const size_t comma = dims.find(',');
    const std::string_view item = dims.substr(0, comma);
    const size_t a = item.find_first_not_of(' ');
    if (a != std::string_view::npos) {
      int64_t d = 0;
      const auto [end, ec] = std::from_chars(item.data() + a, item.data() + item.size(), d);
      KOFF_CHECK(ec == std::errc() && d >= 0 &&
                     std::string_view(end, item.data() + item.size()).find_first_not_of(' ') == std::string_view::npos,
                 "{}: bad shape entry '{}'", file, item);
      shape.push_back(d);
    }
    if (comma == std::string_view::npos) break;
    dims.remove_prefix(comma + 1);
  }
  Tensor t = Tensor::empty(shape, dtype);
  const size_t data_start = header_start + header_len;
  KOFF_CHECK(bytes.size() - data_start == t.nbytes(), "{}: {} data bytes for shape {} {} which needs {}", file,
             bytes.size() - data_start, shape_str(shape), dtype_name(dtype), t.nbytes());
  if (t.nbytes() > 0) std::memcpy(t.raw_data(), bytes.data() + data_start, t.nbytes());
  return t;
}

}  // namespace koff::io
