// Shared helpers of the engine/io tests: a scratch directory per test, raw file construction for
// malformed inputs, the value formulas shared with safetensors_reference.py, and error matching.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/tensor/error.h"
#include "engine/tensor/tensor.h"

namespace koff::io::testing {

namespace fs = std::filesystem;

// A fresh directory for one test, removed afterwards.
class ScratchDir : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / fmt::format("koff_io_{}_{}_{}", ::getpid(), info->test_suite_name(), info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path path(const std::string& name) const { return dir_ / name; }
  fs::path dir_;
};

inline void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A safetensors file from a header text and a data buffer; the header length is the header's own
// unless `claimed_length` says otherwise (to make it lie).
inline std::string safetensors_bytes(const std::string& header, const std::string& data,
                                     std::optional<uint64_t> claimed_length = std::nullopt) {
  return le64(claimed_length.value_or(header.size())) + header + data;
}

// The element values shared with safetensors_reference.py's values(): multiples of 1/8 in
// [-6.25, 6.25] for floats (exact in bf16 and f16), multiplicative hashes for integers.
inline Tensor reference_values(DType dtype, const Shape& shape) {
  Tensor t = Tensor::empty(shape, dtype);
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t u = static_cast<uint64_t>(i);
    const double v = static_cast<double>((u * 37) % 101) / 8.0 - 6.25;
    switch (dtype) {
      case DType::f64:
        t.data<double>()[i] = v;
        break;
      case DType::f32:
        t.data<float>()[i] = static_cast<float>(v);
        break;
      case DType::bf16:
        t.data<bf16>()[i] = f32_to_bf16(static_cast<float>(v));
        break;
      case DType::f16:
        t.data<f16>()[i] = f32_to_f16(static_cast<float>(v));
        break;
      case DType::i64:
        t.data<int64_t>()[i] = static_cast<int64_t>(u * 0x9E3779B97F4A7C15ull);
        break;
      case DType::i32:
        t.data<int32_t>()[i] = static_cast<int32_t>(static_cast<uint32_t>(u * 2654435761ull));
        break;
    }
  }
  return t;
}

inline bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor x = a.contiguous(), y = b.contiguous();
  return x.nbytes() == 0 || std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
}

// Runs fn, which must throw koff::Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const koff::Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-koff exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "did not throw; expected an error mentioning " << (parts.empty() ? "" : parts.back());
}

// Python with safetensors and numpy, and this folder (for the reference script).
inline std::string python() {
  const char* env = std::getenv("KOFF_PYTHON");
  return env ? env : KOFF_PYTHON_DEFAULT;
}
inline std::string test_source_dir() { return KOFF_IO_TEST_SOURCE_DIR; }

inline int run_command(const std::string& command) {
  const int rc = std::system(command.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace koff::io::testing
