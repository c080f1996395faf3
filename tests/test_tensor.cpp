// Tensor library: views share storage and index correctly, copies convert exactly, errors name both
// sides of a mismatch.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops/ops.h"
#include "engine/tensor/random.h"
#include "engine/tensor/tensor.h"

namespace koff {
namespace {

Tensor iota(const Shape& shape, DType dtype = DType::f32) {
  return Tensor::arange(shape_numel(shape), DType::f64).view(shape).to(dtype);
}

TEST(Tensor, ContiguousLayout) {
  Tensor t = iota({2, 3, 4});
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.at({1, 2, 3}), 23.0);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
}

TEST(Tensor, TransposeIsAViewAndContiguousCopies) {
  Tensor t = iota({2, 3});
  Tensor tt = t.t();
  EXPECT_TRUE(tt.same_storage(t));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.shape(), (Shape{3, 2}));
  EXPECT_EQ(tt.at({2, 1}), 5.0);  // t[1][2]
  Tensor c = tt.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_FALSE(c.same_storage(t));
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(Tensor, SliceSelectPermuteExpand) {
  Tensor t = iota({4, 5});
  Tensor s = t.slice(1, 1, 5, 2);  // columns 1, 3
  EXPECT_EQ(s.shape(), (Shape{4, 2}));
  EXPECT_EQ(s.at({2, 1}), 13.0);
  EXPECT_EQ(t.select(0, -1).to_vector<float>(), (std::vector<float>{15, 16, 17, 18, 19}));
  Tensor p = iota({2, 3, 4}).permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.at({3, 1, 2}), 1 * 12 + 2 * 4 + 3);
  Tensor e = iota({3}).unsqueeze(0).expand({2, 3});
  EXPECT_EQ(e.strides()[0], 0);
  EXPECT_EQ(e.contiguous().to_vector<float>(), (std::vector<float>{0, 1, 2, 0, 1, 2}));
  s.fill_(-1);  // writes through the strided view
  EXPECT_EQ(t.at({0, 1}), -1.0);
  EXPECT_EQ(t.at({0, 2}), 2.0);
}

TEST(Tensor, ReshapeViewsWhenContiguousCopiesOtherwise) {
  Tensor t = iota({2, 6});
  EXPECT_TRUE(t.reshape({3, -1}).same_storage(t));
  EXPECT_EQ(t.reshape({3, -1}).shape(), (Shape{3, 4}));
  Tensor tt = t.t();
  EXPECT_FALSE(tt.reshape({12}).same_storage(t));
  EXPECT_THROW(tt.view({12}), Error);
}

TEST(Tensor, DtypeConversions) {
  Tensor t = Tensor::from_vector<float>({1.0f, -2.5f, 3.140625f, 65504.0f, 1e-3f}, {5});
  // bf16 keeps 8 bits of mantissa: these values other than 1e-3 are exact in bf16.
  auto back = t.to(DType::bf16).to(DType::f32).to_vector<float>();
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[1], -2.5f);
  EXPECT_EQ(back[2], 3.140625f);
  EXPECT_NEAR(back[4], 1e-3f, 1e-3f / 128);
  auto h = t.to(DType::f16).to(DType::f32).to_vector<float>();
  EXPECT_EQ(h[3], 65504.0f);  // largest f16
  EXPECT_NEAR(h[4], 1e-3f, 1e-3f / 1024);
  EXPECT_EQ(t.to(DType::i32).to_vector<int32_t>(), (std::vector<int32_t>{1, -2, 3, 65504, 0}));
  // Round to nearest even at the bf16 halfway point: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  // f16 subnormals round-trip
  EXPECT_EQ(f16_to_f32(f32_to_f16(std::ldexp(1.0f, -24))), std::ldexp(1.0f, -24));
}

TEST(Tensor, PrinterIsReadableAndSummarises) {
  Tensor t = iota({2, 3});
  EXPECT_EQ(t.str(), "tensor([[0, 1, 2],\n        [3, 4, 5]], shape=[2, 3], dtype=f32, device=cpu)");
  EXPECT_EQ(fmt::format("{}", iota({3}, DType::i64)), "tensor([0, 1, 2], shape=[3], dtype=i64, device=cpu)");
  std::string big = iota({100}).str();
  EXPECT_NE(big.find("0, 1, 2, ..., 97, 98, 99"), std::string::npos) << big;
}

TEST(Tensor, ErrorsNameBothSides) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  try {
    ops::add(a, b);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3, 2]"), std::string::npos) << e.what();
  }
  try {
    ops::add(a, Tensor::zeros({2, 3}, DType::f64));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f64"), std::string::npos) << e.what();
  }
  try {
    ops::matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4, 5]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(a.at({2, 0}), Error);
  EXPECT_THROW(a.data<double>(), Error);
  EXPECT_THROW(Tensor::zeros({2}, DType::f32, Device::cuda(0)).numel(), Error) << "no CUDA allocator here";
}

// A stand-in "CUDA" allocator backed by host memory: lets the CPU build check device-mismatch errors
// and cross-device copies without a GPU. Registered only inside this test.
class HostBackedDeviceAllocator final : public Allocator {
 public:
  void* allocate(size_t n, int) override { return n ? std::malloc(n) : nullptr; }
  void deallocate(void* p, size_t, int) override { std::free(p); }
  void copy(void* dst, Device, const void* src, Device, size_t n) override { std::memcpy(dst, src, n); }
  void memset_zero(void* p, size_t n, int) override { std::memset(p, 0, n); }
};

TEST(Tensor, DeviceMismatchNamesBothDevices) {
  if (has_allocator(DeviceType::CUDA)) GTEST_SKIP() << "a real CUDA allocator is registered";
  HostBackedDeviceAllocator fake;
  register_allocator(DeviceType::CUDA, &fake);
  {
    Tensor host = iota({2, 2});
    Tensor dev = host.to(Device::cuda(1));
    EXPECT_EQ(dev.device().str(), "cuda:1");
    EXPECT_EQ(dev.to(Device::cpu()).to_vector<float>(), host.to_vector<float>());
    try {
      check_same_device(host, dev, "add");
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cpu vs cuda:1"), std::string::npos) << e.what();
    }
  }
  register_allocator(DeviceType::CUDA, nullptr);
}

TEST(Random, PhiloxIsCounterBasedAndUniform) {
  Philox a(42, 7), b(42, 7), c(43, 7);
  EXPECT_EQ(a.bits(123456), b.bits(123456));  // same key and counter: same number, no state
  EXPECT_NE(a.bits(0), c.bits(0));
  double mean = 0, var = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double u = a.uniform(i);
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
    mean += u;
    var += (u - 0.5) * (u - 0.5);
  }
  EXPECT_NEAR(mean / n, 0.5, 0.005);       // 1/sqrt(12 n) ~ 0.00065: a 7-sigma band
  EXPECT_NEAR(var / n, 1.0 / 12, 0.002);
  Tensor z = randn({100000}, a, DType::f64);
  auto v = z.to_vector<double>();
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= v.size();
  for (double x : v) s += (x - m) * (x - m);
  EXPECT_NEAR(m, 0.0, 0.02);
  EXPECT_NEAR(s / v.size(), 1.0, 0.03);
}

}  // namespace
}  // namespace koff

namespace koff {
namespace {

TEST(Tensor, EmptyTensorsCopyAndConvert) {
  Tensor e = Tensor::empty({0, 4});
  EXPECT_EQ(e.numel(), 0);
  Tensor c = e.clone();
  EXPECT_EQ(c.shape(), (Shape{0, 4}));
  EXPECT_EQ(e.to(DType::bf16).numel(), 0);
  EXPECT_EQ(e.str(), "tensor([], shape=[0, 4], dtype=f32, device=cpu)");
}

}  // namespace
}  // namespace koff
