// .npy writer and reader (byte compatibility with numpy.save is checked in test_io_reference.cpp).
#include <gtest/gtest.h>

#include "engine/io/npy.h"
#include "tests/io/test_support.h"

namespace koff::io::testing {
namespace {

using NpyTest = ScratchDir;

TEST_F(NpyTest, RoundTripEveryNumpyDType) {
  for (DType dtype : {DType::f32, DType::f64, DType::f16, DType::i32, DType::i64}) {
    for (const Shape& shape : {Shape{}, Shape{5}, Shape{2, 3}, Shape{2, 0, 4}, Shape{3, 1, 2, 2}}) {
      const Tensor t = reference_values(dtype, shape);
      save_npy(path("t.npy"), t);
      const std::string bytes = read_bytes(path("t.npy"));
      EXPECT_EQ((bytes.size() - t.nbytes()) % 64, 0u) << "data starts at a multiple of 64";
      EXPECT_TRUE(same_bytes(load_npy(path("t.npy")), t)) << dtype_name(dtype) << " " << shape_str(shape);
    }
  }
}

TEST_F(NpyTest, HeaderIsNumpysText) {
  save_npy(path("a.npy"), reference_values(DType::f32, {2, 3}));
  const std::string bytes = read_bytes(path("a.npy"));
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const std::string header = bytes.substr(10, 118);
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  EXPECT_EQ(header.substr(0, dict.size()), dict);
  EXPECT_EQ(header.find_first_not_of(' ', dict.size()), header.size() - 1) << "then spaces up to the newline";
  EXPECT_EQ(header.back(), '\n');
  save_npy(path("b.npy"), reference_values(DType::i64, {7}));
  EXPECT_NE(read_bytes(path("b.npy")).find("'shape': (7,), }"), std::string::npos);
  save_npy(path("c.npy"), reference_values(DType::f64, {}));
  EXPECT_NE(read_bytes(path("c.npy")).find("'descr': '<f8', 'fortran_order': False, 'shape': (), }"),
            std::string::npos);
}

TEST_F(NpyTest, NonContiguousTensorsAreWrittenInRowMajorOrder) {
  const Tensor t = reference_values(DType::f32, {3, 4}).t();
  save_npy(path("t.npy"), t);
  EXPECT_TRUE(same_bytes(load_npy(path("t.npy")), t.contiguous()));
}

TEST_F(NpyTest, Errors) {
  expect_error([&] { save_npy(path("b.npy"), reference_values(DType::bf16, {2})); },
               {"b.npy", "bf16", "no NumPy equivalent"});
  EXPECT_FALSE(fs::exists(path("b.npy")));
  write_bytes(path("x.npy"), "not an npy file");
  expect_error([&] { load_npy(path("x.npy")); }, {"x.npy", "not a .npy file"});
  save_npy(path("t.npy"), reference_values(DType::f32, {4}));
  std::string bytes = read_bytes(path("t.npy"));
  write_bytes(path("t.npy"), bytes.substr(0, bytes.size() - 1));
  expect_error([&] { load_npy(path("t.npy")); }, {"t.npy", "data bytes"});
  const size_t at = bytes.find("<f4");
  write_bytes(path("t.npy"), bytes.replace(at, 3, ">f4"));
  expect_error([&] { load_npy(path("t.npy")); }, {"t.npy", "'>f4' is not supported"});
}

}  // namespace
}  // namespace koff::io::testing
