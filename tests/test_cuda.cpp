// CUDA storage: runs where a GPU is present, skips (GTEST_SKIP) elsewhere. Built only with KOFF_CUDA.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/ops/ops.h"
#include "engine/tensor/random.h"
#include "engine/tensor/tensor.h"

#ifdef KOFF_HAVE_CUDA
#include "cuda/attention.h"
#include "cuda/device.h"

namespace koff {
namespace {

bool gpu() { return cuda::register_if_available(); }

// While alive, device allocations are poisoned (NaN), so an output a kernel fails to write shows up.
struct Poison {
  Poison() { cuda::set_poison_allocations(true); }
  ~Poison() { cuda::set_poison_allocations(false); }
};

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

// The binary kernel through the backend's table (ops::mul/add on device tensors): f32 with float4
// loads and an odd length (the vector tail), bf16; outputs poisoned so an unwritten element fails.
TEST(Cuda, ElementwiseKernelsMatchCpu) {
  if (!gpu()) GTEST_SKIP() << cuda::describe_devices();
  Poison poison;
  const int64_t n = 100003;  // odd: exercises the vector tail
  Tensor a = randn({n}, Philox(11, 1)), b = randn({n}, Philox(11, 2));
  Tensor da = a.to(Device::cuda(0)), db = b.to(Device::cuda(0));
  Tensor out = ops::mul(da, db);
  EXPECT_LT(max_rel_error(out.to(Device::cpu()), ops::mul(a, b)), 1e-6);
  Tensor ab = a.to(DType::bf16).to(Device::cuda(0)), bb = b.to(DType::bf16).to(Device::cuda(0));
  Tensor ob = ops::add(ab, bb);
  ASSERT_EQ(ob.dtype(), DType::bf16);
  Tensor got = ob.to(Device::cpu()).to(DType::f32);
  EXPECT_FALSE(has_non_finite(got));
  EXPECT_LT(max_rel_error(got, ops::add(a, b)), 1e-2);
}

// ---- the CUDA backend at model-sized shapes -------------------------------------------------------
// The op harness (test_ops.cpp) runs every op at tiny shapes; these run the kernels where their tiling
// matters (head_dim 128 tiles, many query/key tiles, GQA, memory slots, chunked vocabularies, long
// rows) against the CPU backend: f32 within 1e-5, bf16 within 1e-2 of the CPU in f32 on the same
// bf16-rounded inputs. Device allocations are poisoned (NaN) so an unwritten output cannot pass.
Tensor rounded(const Tensor& t, DType dt) { return dt == DType::bf16 ? t.to(DType::bf16).to(DType::f32) : t; }
Tensor dev(const Tensor& t, DType dt) { return t.to(dt).to(Device::cuda(0)); }
void expect_close(const Tensor& got_dev, const Tensor& want, double tol, const std::string& what) {
  Tensor got = got_dev.to(Device::cpu()).to(DType::f32);
  EXPECT_FALSE(has_non_finite(got)) << what;
  EXPECT_LT(max_rel_error(got, want.to(DType::f32)), tol) << what;
}

class CudaBackendAt : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda::register_if_available()) GTEST_SKIP() << cuda::describe_devices();
  }
  double tol() const { return GetParam() == DType::bf16 ? 1e-2 : 1e-5; }
  Poison poison_;
};

struct AttnCase {
  int64_t b, tq, tk, h, g, m, hd;
  bool causal;
};

TEST_P(CudaBackendAt, AttentionForwardBackward) {
  const DType dt = GetParam();
  for (AttnCase c : {AttnCase{2, 193, 193, 6, 2, 5, 128, true}, AttnCase{1, 7, 100, 8, 8, 16, 128, true},
                     AttnCase{2, 70, 70, 4, 1, 0, 64, false}, AttnCase{1, 33, 33, 2, 1, 3, 256, true}}) {
    SCOPED_TRACE(::testing::Message() << "B" << c.b << " Tq" << c.tq << " Tk" << c.tk << " H" << c.h << " G" << c.g
                                      << " m" << c.m << " hd" << c.hd << (c.causal ? " causal" : ""));
    Philox rng(21, uint64_t(c.tq * 1000 + c.hd));
    Tensor q = rounded(randn({c.b, c.tq, c.h, c.hd}, Philox(rng.bits(1), 1)), dt);
    Tensor k = rounded(randn({c.b, c.tk, c.g, c.hd}, Philox(rng.bits(2), 2)), dt);
    Tensor v = rounded(randn({c.b, c.tk, c.g, c.hd}, Philox(rng.bits(3), 3)), dt);
    Tensor mk = c.m ? rounded(randn({c.b, c.m, c.g, c.hd}, Philox(rng.bits(4), 4)), dt) : Tensor();
    Tensor mv = c.m ? rounded(randn({c.b, c.m, c.g, c.hd}, Philox(rng.bits(5), 5)), dt) : Tensor();
    Tensor dout = rounded(randn({c.b, c.tq, c.h, c.hd}, Philox(rng.bits(6), 6)), dt);
    const double scale = 1.0 / std::sqrt(double(c.hd));
    ops::AttentionOut want = ops::attention(q, k, v, mk, mv, scale, c.causal);
    auto dv_ = [&](const Tensor& t) { return t.defined() ? dev(t, dt) : Tensor(); };
    ops::AttentionOut got = ops::attention(dv_(q), dv_(k), dv_(v), dv_(mk), dv_(mv), scale, c.causal);
    expect_close(got.out, want.out, tol(), "out");
    EXPECT_LT(max_abs_diff(got.lse.to(Device::cpu()), want.lse), 1e-4 + (dt == DType::bf16 ? 1e-2 : 0)) << "lse";
    // The backward from the CPU's own forward, so both sides see the same out/lse up to rounding.
    ops::AttentionGrads gw = ops::attention_backward(dout, q, k, v, mk, mv, want.out, want.lse, scale, c.causal);
    ops::AttentionGrads gg = ops::attention_backward(dv_(dout), dv_(q), dv_(k), dv_(v), dv_(mk), dv_(mv), dv_(want.out),
                                                     want.lse.to(Device::cuda(0)), scale, c.causal);
    expect_close(gg.dq, gw.dq, tol(), "dq");
    expect_close(gg.dk, gw.dk, tol(), "dk");
    expect_close(gg.dv, gw.dv, tol(), "dv");
    if (c.m) {
      expect_close(gg.dmem_k, gw.dmem_k, tol(), "dmem_k");
      expect_close(gg.dmem_v, gw.dmem_v, tol(), "dmem_v");
    }
  }
}

// Both bf16 attention paths, chosen with KOFF_CUDA_ATTENTION: the tensor-core kernels (attention_mma.cu)
// and the SIMT ones (attention.cu), each against the CPU backend in f32 on the same bf16-rounded inputs.
class ScopedEnv {  // sets an environment variable for its lifetime, then restores the old value
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() { had_ ? setenv(name_, old_.c_str(), 1) : unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

// lse: the same rows at -inf (rows that see no key), the rest within `tol` absolute.
void expect_lse_close(const Tensor& got_dev, const Tensor& want, double tol) {
  const std::vector<float> got = got_dev.to(Device::cpu()).to_vector<float>(), ref = want.to_vector<float>();
  ASSERT_EQ(got.size(), ref.size());
  double diff = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i])) {
      ASSERT_TRUE(std::isinf(got[i]) && got[i] < 0) << "lse[" << i << "] = " << got[i] << ", want -inf";
    } else {
      ASSERT_TRUE(std::isfinite(got[i])) << "lse[" << i << "] = " << got[i];
      diff = std::max(diff, std::abs(double(got[i]) - double(ref[i])));
    }
  }
  EXPECT_LT(diff, tol) << "lse";
}

TEST(CudaAttentionPaths, Bf16TensorCoreAndSimtMatchCpu) {
  if (!cuda::register_if_available()) GTEST_SKIP() << cuda::describe_devices();
  Poison poison;
  const DType dt = DType::bf16;
  const double tol = 1e-2;
  for (AttnCase c : {AttnCase{1, 2048, 2048, 24, 8, 16, 128, true},  // Llama-3.2-3B
                     AttnCase{1, 77, 77, 4, 2, 5, 64, true},         // head_dim 64, odd T
                     AttnCase{2, 130, 130, 6, 2, 16, 128, true},     // B 2, odd T, several key tiles
                     AttnCase{1, 1, 40, 24, 8, 16, 128, true},       // decode step
                     AttnCase{1, 5, 40, 24, 8, 16, 128, true},       // Tq < Tk
                     AttnCase{1, 96, 96, 8, 2, 0, 128, true},        // no memory slots
                     AttnCase{2, 70, 70, 4, 1, 0, 64, false},        // not causal
                     AttnCase{1, 20, 8, 2, 1, 0, 64, true}}) {       // Tq > Tk: rows that see no key
    SCOPED_TRACE(::testing::Message() << "B" << c.b << " Tq" << c.tq << " Tk" << c.tk << " H" << c.h << " G" << c.g
                                      << " m" << c.m << " hd" << c.hd << (c.causal ? " causal" : ""));
    Philox rng(23, uint64_t(c.tq * 1000 + c.tk * 7 + c.hd));
    Tensor q = rounded(randn({c.b, c.tq, c.h, c.hd}, Philox(rng.bits(1), 1)), dt);
    Tensor k = rounded(randn({c.b, c.tk, c.g, c.hd}, Philox(rng.bits(2), 2)), dt);
    Tensor v = rounded(randn({c.b, c.tk, c.g, c.hd}, Philox(rng.bits(3), 3)), dt);
    Tensor mk = c.m ? rounded(randn({c.b, c.m, c.g, c.hd}, Philox(rng.bits(4), 4)), dt) : Tensor();
    Tensor mv = c.m ? rounded(randn({c.b, c.m, c.g, c.hd}, Philox(rng.bits(5), 5)), dt) : Tensor();
    Tensor dout = rounded(randn({c.b, c.tq, c.h, c.hd}, Philox(rng.bits(6), 6)), dt);
    const double scale = 1.0 / std::sqrt(double(c.hd));
    ops::AttentionOut want = ops::attention(q, k, v, mk, mv, scale, c.causal);
    ops::AttentionGrads gw = ops::attention_backward(dout, q, k, v, mk, mv, want.out, want.lse, scale, c.causal);
    auto dv_ = [&](const Tensor& t) { return t.defined() ? dev(t, dt) : Tensor(); };
    const cuda::AttentionShape shape{c.b, c.tq, c.tk, c.h, c.g, c.m, c.hd};
    for (const char* path : {"mma", "simt"}) {
      SCOPED_TRACE(path);
      ScopedEnv env("KOFF_CUDA_ATTENTION", path);
      // The variable does select the path (and the tensor cores take every case here).
      EXPECT_EQ(cuda::attention_use_mma(cuda::Dt::bf16, shape, {}), std::string(path) == "mma");
      ops::AttentionOut got = ops::attention(dv_(q), dv_(k), dv_(v), dv_(mk), dv_(mv), scale, c.causal);
      expect_close(got.out, want.out, tol, "out");
      expect_lse_close(got.lse, want.lse, 1e-2);
      // The backward from the CPU's own forward, so both sides see the same out/lse up to rounding.
      ops::AttentionGrads gg = ops::attention_backward(dv_(dout), dv_(q), dv_(k), dv_(v), dv_(mk), dv_(mv),
                                                       dv_(want.out), want.lse.to(Device::cuda(0)), scale, c.causal);
      expect_close(gg.dq, gw.dq, tol, "dq");
      expect_close(gg.dk, gw.dk, tol, "dk");
      expect_close(gg.dv, gw.dv, tol, "dv");
      if (c.m) {
        expect_close(gg.dmem_k, gw.dmem_k, tol, "dmem_k");
        expect_close(gg.dmem_v, gw.dmem_v, tol, "dmem_v");
      }
    }
  }
}

TEST_P(CudaBackendAt, LinearCrossEntropyChunked) {
  const DType dt = GetParam();
  const int64_t n = 300, vocab = 5003, d = 64;
  Tensor h = rounded(randn({n, d}, Philox(31, 1)), dt), w = rounded(randn({vocab, d}, Philox(31, 2), DType::f32, 0.2), dt);
  std::vector<int64_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[size_t(i)] = i % 7 == 3 ? ops::kIgnoreIndex : int64_t(Philox(31, 3).bits(i) % vocab);
  Tensor targets = Tensor::from_vector(t, {n});
  ops::CrossEntropyOut want = ops::linear_cross_entropy(h, w, targets, 128);
  ops::CrossEntropyOut got = ops::linear_cross_entropy(dev(h, dt), dev(w, dt), targets.to(Device::cuda(0)), 128);
  EXPECT_EQ(got.count, want.count);
  expect_close(got.loss_sum, want.loss_sum, tol(), "loss_sum");
  expect_close(got.lse, want.lse, tol(), "lse");
  ops::LinearCrossEntropyGrads gw = ops::linear_cross_entropy_backward(0.01, h, w, targets, want.lse, true, 128);
  ops::LinearCrossEntropyGrads gg = ops::linear_cross_entropy_backward(
      0.01, dev(h, dt), dev(w, dt), targets.to(Device::cuda(0)), want.lse.to(Device::cuda(0)), true, 128);
  expect_close(gg.dh, gw.dh, tol(), "dh");
  expect_close(gg.dw, gw.dw, dt == DType::bf16 ? 2e-2 : tol(), "dw (accumulated over chunks in the output dtype)");
}

TEST_P(CudaBackendAt, NormsReductionsAndGemms) {
  const DType dt = GetParam();
  Tensor x = rounded(randn({37, 3072}, Philox(41, 1)), dt), w = rounded(randn({3072}, Philox(41, 2)), dt);
  Tensor dy = rounded(randn({37, 3072}, Philox(41, 3)), dt);
  ops::RmsNormOut rw = ops::rmsnorm(x, w, 1e-5), rg = ops::rmsnorm(dev(x, dt), dev(w, dt), 1e-5);
  expect_close(rg.y, rw.y, tol(), "rmsnorm y");
  ops::RmsNormGrads gw = ops::rmsnorm_backward(dy, x, w, rw.rstd);
  ops::RmsNormGrads gg = ops::rmsnorm_backward(dev(dy, dt), dev(x, dt), dev(w, dt), rw.rstd.to(Device::cuda(0)));
  expect_close(gg.dx, gw.dx, tol(), "rmsnorm dx");
  expect_close(gg.dw, gw.dw, tol(), "rmsnorm dw");
  Tensor big = rounded(randn({5000, 70}, Philox(41, 4)), dt);
  expect_close(ops::sum_to_last(dev(big, dt)), ops::sum_to_last(big), tol(), "sum_to_last");
  expect_close(ops::sum(dev(big, dt)), ops::sum(big), tol() * 10, "sum (cancellation: relative to the result)");
  Tensor act = rounded(randn({4, 50, 24, 128}, Philox(41, 5)), dt), g2 = rounded(randn({4, 50, 24, 128}, Philox(41, 6)), dt);
  expect_close(ops::sum_groups_product(dev(g2, dt), dev(act, dt), 24, 128), ops::sum_groups_product(g2, act, 24, 128),
               tol(), "sum_groups_product");
  Tensor a = rounded(randn({3, 100, 70}, Philox(41, 7)), dt), b = rounded(randn({3, 90, 70}, Philox(41, 8)), dt);
  Tensor bs = rounded(randn({70, 90}, Philox(41, 9)), dt);
  expect_close(ops::matmul(dev(a, dt), dev(b, dt), false, true), ops::matmul(a, b, false, true), tol(), "batched A B^T");
  expect_close(ops::matmul(dev(a, dt), dev(bs, dt)), ops::matmul(a, bs), tol(), "shared B");
  Tensor at = rounded(randn({3, 70, 100}, Philox(41, 10)), dt);
  expect_close(ops::matmul(dev(at, dt), dev(bs, dt), true, false), ops::matmul(at, bs, true, false), tol(),
               "shared B, A^T");
  Tensor logits = rounded(randn({9, 128256}, Philox(41, 11), DType::f32, 3.0), dt);
  Tensor tg = Tensor::from_vector<int64_t>({5, 128255, 0, 77, ops::kIgnoreIndex, 9, 10, 11, 12}, {9});
  ops::CrossEntropyOut cw = ops::cross_entropy(logits, tg), cg = ops::cross_entropy(dev(logits, dt), tg.to(Device::cuda(0)));
  EXPECT_EQ(cg.count, cw.count);
  expect_close(cg.lse, cw.lse, tol(), "cross_entropy lse (V = 128256)");
  expect_close(ops::cross_entropy_backward(0.5, dev(logits, dt), tg.to(Device::cuda(0)), cw.lse.to(Device::cuda(0))),
               ops::cross_entropy_backward(0.5, logits, tg, cw.lse), tol(), "cross_entropy_backward");
}

// The fused SwiGLU + neuron gate at model-like and ragged shapes (columns not a multiple of a block,
// rows over several reduction chunks), and linear with a bias through cuBLASLt's bias epilogue.
TEST_P(CudaBackendAt, SwigluGatedAndLinearBias) {
  const DType dt = GetParam();
  for (Shape s : {Shape{2, 150, 8192}, Shape{333, 300}, Shape{1, 1, 40}}) {
    SCOPED_TRACE(shape_str(s));
    const int64_t f = s.back();
    Tensor g = rounded(randn(s, Philox(51, 1), DType::f32, 2.0), dt), u = rounded(randn(s, Philox(51, 2)), dt);
    Tensor z = rounded(rand_uniform({f}, Philox(51, 3), 0.0, 1.0), dt), dy = rounded(randn(s, Philox(51, 4)), dt);
    expect_close(ops::swiglu_gated(dev(g, dt), dev(u, dt), dev(z, dt)), ops::swiglu_gated(g, u, z), tol(), "y");
    ops::SwigluGatedGrads want = ops::swiglu_gated_backward(dy, g, u, z);
    for (bool want_dz : {true, false}) {
      ops::SwigluGatedGrads got = ops::swiglu_gated_backward(dev(dy, dt), dev(g, dt), dev(u, dt), dev(z, dt), want_dz);
      expect_close(got.dgate, want.dgate, tol(), "dgate");
      expect_close(got.dup, want.dup, tol(), "dup");
      ASSERT_EQ(got.dz.defined(), want_dz);
      if (want_dz) expect_close(got.dz, want.dz, tol(), "dz");
    }
  }
  for (int64_t n : {int64_t{300}, int64_t{8192}}) {
    SCOPED_TRACE(n);
    Tensor x = rounded(randn({3, 67, 96}, Philox(52, 1)), dt),
           w = rounded(randn({n, 96}, Philox(52, 2), DType::f32, 0.1), dt);
    Tensor b = rounded(randn({n}, Philox(52, 3)), dt);
    expect_close(ops::linear(dev(x, dt), dev(w, dt), dev(b, dt)), ops::linear(x, w, b), tol(), "linear + bias");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaBackendAt, ::testing::Values(DType::f32, DType::bf16),
                         [](const ::testing::TestParamInfo<DType>& i) { return std::string(dtype_name(i.param)); });

TEST(Cuda, StridedCopiesAndCastsStayOnDevice) {
  if (!cuda::register_if_available()) GTEST_SKIP() << cuda::describe_devices();
  Tensor x = randn({5, 7, 3}, Philox(51, 1));
  Tensor d = x.to(Device::cuda(0));
  Tensor t = d.transpose(0, 2).contiguous();  // a device kernel, not a host round trip
  EXPECT_EQ(max_abs_diff(t.to(Device::cpu()), x.transpose(0, 2).contiguous()), 0.0);
  Tensor b = d.slice(1, 2, 6).to(DType::bf16).to(DType::f32);
  EXPECT_LT(max_rel_error(b.to(Device::cpu()), x.slice(1, 2, 6).contiguous()), 1e-2);
}

TEST(Cuda, AdamWMultiMatchesCpu) {
  if (!cuda::register_if_available()) GTEST_SKIP() << cuda::describe_devices();
  ops::AdamWConfig cfg{1e-3, 0.9, 0.95, 1e-8, 0.1};
  std::vector<Tensor> p, g, m, v, pd, gd, md, vd;
  for (int i = 0; i < 70; ++i) {  // more than one launch's 64 tensors
    const int64_t n = 1 + 37 * i;
    p.push_back(randn({n}, Philox(61, uint64_t(i))));
    g.push_back(randn({n}, Philox(62, uint64_t(i))));
    m.push_back(Tensor::zeros({n}));
    v.push_back(Tensor::zeros({n}));
    pd.push_back(p.back().to(Device::cuda(0)));
    gd.push_back(g.back().to(Device::cuda(0)));
    md.push_back(m.back().to(Device::cuda(0)));
    vd.push_back(v.back().to(Device::cuda(0)));
  }
  std::vector<Tensor*> pp, mp, vp;
  for (size_t i = 0; i < p.size(); ++i) pp.push_back(&pd[i]), mp.push_back(&md[i]), vp.push_back(&vd[i]);
  for (int64_t step = 1; step <= 3; ++step) {
    ops::adamw_multi_(pp, gd, mp, vp, cfg, step);  // the CUDA entry: one launch per 64 f32 tensors
    for (size_t i = 0; i < p.size(); ++i) ops::adamw_step_(p[i], g[i], m[i], v[i], cfg, step);
  }
  for (size_t i = 0; i < p.size(); ++i) EXPECT_LT(max_rel_error(pd[i].to(Device::cpu()), p[i]), 1e-6) << i;
}

TEST(Cuda, OutOfRangeIdsRaiseAnError) {
  if (!cuda::register_if_available()) GTEST_SKIP() << cuda::describe_devices();
  Tensor table = randn({10, 4}, Philox(71, 1)).to(Device::cuda(0));
  Tensor ids = Tensor::from_vector<int64_t>({1, 10}, {2}).to(Device::cuda(0));
  Tensor out = ops::embedding(table, ids);
  EXPECT_THROW(cuda::synchronize(0), Error);
  cuda::synchronize(0);  // the flag was cleared
  Tensor logits = randn({2, 5}, Philox(71, 2)).to(Device::cuda(0));
  EXPECT_THROW(ops::cross_entropy(logits, Tensor::from_vector<int64_t>({0, 5}, {2}).to(Device::cuda(0))), Error);
}

}  // namespace
}  // namespace koff
#endif
