// CUDA storage: runs where a GPU is present, skips (GTEST_SKIP) elsewhere. Built only with KOFF_CUDA.
#include <gtest/gtest.h>

#include "engine/tensor/random.h"
#include "engine/tensor/tensor.h"

#ifdef KOFF_HAVE_CUDA
#include "cuda/device.h"

namespace koff {
namespace {

bool gpu() { return cuda::register_if_available(); }

TEST(Cuda, DescribesDevicesOrWhyNone) {
  std::string s = cuda::describe_devices();
  EXPECT_FALSE(s.empty());
  EXPECT_EQ(cuda::device_count() > 0, s.rfind("no GPU", 0) != 0) << s;
}

TEST(Cuda, HostDeviceRoundTrip) {
  if (!gpu()) GTEST_SKIP() << cuda::describe_devices();
  Tensor host = randn({3, 1000}, Philox(1, 2));
  Tensor dev = host.to(Device::cuda(0));
  EXPECT_TRUE(dev.device().is_cuda());
  EXPECT_EQ(max_abs_diff(dev.to(Device::cpu()), host), 0.0);
  Tensor z = Tensor::zeros({17}, DType::f32, Device::cuda(0));
  EXPECT_EQ(z.to(Device::cpu()).to_vector<float>(), std::vector<float>(17, 0.0f));
  Tensor bf = host.to(DType::bf16).to(Device::cuda(0)).to(Device::cpu()).to(DType::f32);
  EXPECT_LT(max_rel_error(bf, host), 1e-2);
}

TEST(Cuda, CachingAllocatorReusesFreedBlocks) {
  if (!gpu()) GTEST_SKIP() << cuda::describe_devices();
  void* first;
  {
    Tensor a = Tensor::empty({1 << 20}, DType::f32, Device::cuda(0));
    first = a.raw_data();
  }
  Tensor b = Tensor::empty({1 << 20}, DType::f32, Device::cuda(0));
  EXPECT_EQ(b.raw_data(), first);  // same rounded size: served from the cache, no cudaMalloc
}

}  // namespace
}  // namespace koff
#endif

#ifdef KOFF_HAVE_CUDA
#include "cuda/elementwise.h"
#include "engine/ops/ops.h"

namespace koff {
namespace {

TEST(Cuda, ElementwiseKernelsMatchCpu) {
  if (!cuda::register_if_available()) GTEST_SKIP() << cuda::describe_devices();
  const int64_t n = 100003;  // odd: exercises the vector tail
  Tensor a = randn({n}, Philox(11, 1)), b = randn({n}, Philox(11, 2));
  Tensor da = a.to(Device::cuda(0)), db = b.to(Device::cuda(0));
  Tensor out = Tensor::full({n}, NAN, DType::f32, Device::cuda(0));  // poisoned
  cuda::binary(cuda::BinaryOp::mul, da.data<float>(), db.data<float>(), out.data<float>(), n);
  EXPECT_LT(max_rel_error(out.to(Device::cpu()), ops::mul(a, b)), 1e-6);
  Tensor ab = a.to(DType::bf16).to(Device::cuda(0)), bb = b.to(DType::bf16).to(Device::cuda(0));
  Tensor ob = Tensor::empty({n}, DType::bf16, Device::cuda(0));
  cuda::binary(cuda::BinaryOp::add, reinterpret_cast<const __nv_bfloat16*>(ab.raw_data()),
               reinterpret_cast<const __nv_bfloat16*>(bb.raw_data()), reinterpret_cast<__nv_bfloat16*>(ob.raw_data()), n);
  Tensor got = ob.to(Device::cpu()).to(DType::f32);
  EXPECT_FALSE(has_non_finite(got));
  EXPECT_LT(max_rel_error(got, ops::add(a, b)), 1e-2);
}

}  // namespace
}  // namespace koff
#endif
