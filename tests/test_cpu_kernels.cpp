// Hand-computed cases for the CPU kernels behind engine/ops, and the wording of op errors. The
// systematic forward / finite-difference harness is tests/test_ops.cpp; these are the few values one
// can check on paper.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

using namespace koff;

namespace {

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_values(const Tensor& t, const std::vector<double>& want, double tol) {
  auto got = t.to_vector<double>();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

}  // namespace

TEST(CpuKernels, Matmul2x2AndTransposes) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector<float>({5, 6, 7, 8}, {2, 2});
  op_counters() = {};
  expect_values(ops::matmul(a, b), {19, 22, 43, 50}, 0);
  EXPECT_EQ(op_counters().gemm, 1);
  EXPECT_EQ(op_counters().gemm_flops, 2 * 2 * 2 * 2);
  // a^T b = [[1,3],[2,4]] [[5,6],[7,8]]; the same through a transposed view (no copy path).
  expect_values(ops::matmul(a, b, true, false), {26, 30, 38, 44}, 0);
  expect_values(ops::matmul(a.t(), b), {26, 30, 38, 44}, 0);
  // a b^T = [[17, 23], [39, 53]]
  expect_values(ops::matmul(a, b, false, true), {17, 23, 39, 53}, 0);
  expect_values(ops::matmul(a, b.t(), false, false), {17, 23, 39, 53}, 0);
  EXPECT_EQ(op_counters().gemm, 5);
}

TEST(CpuKernels, BatchedMatmulWithSharedB) {
  // Two batches of a; b = identity * 2 shared by both: folded into one GEMM with M = 4.
  Tensor a = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  Tensor b = Tensor::from_vector<double>({2, 0, 0, 2}, {2, 2});
  op_counters() = {};
  expect_values(ops::matmul(a, b), {2, 4, 6, 8, 10, 12, 14, 16}, 0);
  EXPECT_EQ(op_counters().gemm_flops, 2 * 2 * 2 * 2 * 2);
  // Per-batch B: batch 1 multiplies by [[0,1],[1,0]] (swaps columns).
  Tensor bb = Tensor::from_vector<double>({1, 0, 0, 1, 0, 1, 1, 0}, {2, 2, 2});
  expect_values(ops::matmul(a, bb), {1, 2, 3, 4, 6, 5, 8, 7}, 0);
  // Shared B with trans_a: a[b]^T for each batch.
  expect_values(ops::matmul(a, b, true, false), {2, 6, 4, 8, 10, 14, 12, 16}, 0);
  // linear: x W^T + bias
  Tensor x = Tensor::from_vector<double>({1, 2}, {1, 1, 2});
  Tensor w = Tensor::from_vector<double>({1, 0, 1, 1, 0, 3}, {3, 2});
  Tensor bias = Tensor::from_vector<double>({0.5, 0, -1}, {3});
  Tensor y = ops::linear(x, w, bias);
  EXPECT_EQ(y.shape(), (Shape{1, 1, 3}));
  expect_values(y, {1.5, 3, 5}, 0);
}

TEST(CpuKernels, SoftmaxOfZeroAndLn2) {
  Tensor x = Tensor::from_vector<float>({0.0f, std::log(2.0f)}, {1, 2});
  expect_values(ops::softmax(x), {1.0 / 3, 2.0 / 3}, 1e-7);
  // Shifted by 1000 the row would overflow exp without the max subtraction (f64 so that 1000 + ln 2
  // keeps its digits).
  Tensor big = Tensor::from_vector<double>({1000.0, 1000.0 + std::log(2.0)}, {1, 2});
  expect_values(ops::softmax(big), {1.0 / 3, 2.0 / 3}, 1e-12);
  // softmax backward with dy = onehot(1): dx = y (e1 - y_1) = [-2/9, 2/9]
  Tensor dy = Tensor::from_vector<float>({0, 1}, {1, 2});
  expect_values(ops::softmax_backward(dy, ops::softmax(x)), {-2.0 / 9, 2.0 / 9}, 1e-7);
}

TEST(CpuKernels, RmsNormOf3And4) {
  Tensor x = Tensor::from_vector<double>({3, 4}, {1, 2});
  Tensor w = Tensor::from_vector<double>({1, 2}, {2});
  auto r = ops::rmsnorm(x, w, 0.0);
  const double rstd = 1.0 / std::sqrt(12.5);  // mean of squares (9 + 16) / 2
  expect_values(r.rstd, {rstd}, 1e-15);
  expect_values(r.y, {3 * rstd, 8 * rstd}, 1e-15);
  // dy = [1, 0]: dx_j = r (w_j dy_j - x_j r^2 mean(dy w x)) with mean = 3/2; dw = dy x r.
  Tensor dy = Tensor::from_vector<double>({1, 0}, {1, 2});
  auto g = ops::rmsnorm_backward(dy, x, w, r.rstd);
  const double c = 1.5 * rstd * rstd;
  expect_values(g.dx, {rstd * (1 - 3 * c), rstd * (0 - 4 * c)}, 1e-15);
  expect_values(g.dw, {3 * rstd, 0}, 1e-15);
}

TEST(CpuKernels, RopeOfKnownVectorAtPosition1) {
  // hd = 4, theta = 10000: inv_freq = [1, 10000^-0.5 = 0.01]; pairs (0, 2) and (1, 3).
  auto inv = ops::rope_inv_freq(4, 10000.0);
  ASSERT_EQ(inv.size(), 2u);
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_NEAR(inv[1], 0.01, 1e-9);
  auto tables = ops::rope_tables(1, 1, 4, 10000.0, {}, DType::f64);  // position 1 only
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4}, {1, 1, 1, 4});
  Tensor y = ops::rope(x, tables);
  const double c0 = std::cos(1.0), s0 = std::sin(1.0), c1 = std::cos(0.01), s1 = std::sin(0.01);
  expect_values(y, {1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1}, 1e-12);
  expect_values(ops::rope(y, tables, true), {1, 2, 3, 4}, 1e-12);
  // Position 0 is the identity.
  auto t0 = ops::rope_tables(0, 1, 4, 10000.0, {}, DType::f64);
  expect_values(ops::rope(x, t0), {1, 2, 3, 4}, 0);
}

TEST(CpuKernels, RopeLlama3ScalingBands) {
  // Llama 3.1 settings: factor 8, low 1, high 4, original 8192 -> wavelength bands 2048 and 8192.
  ops::RopeScaling s{8.0, 1.0, 4.0, 8192};
  const int64_t hd = 128;
  const double theta = 500000.0;
  auto plain = ops::rope_inv_freq(hd, theta), scaled = ops::rope_inv_freq(hd, theta, s);
  const double pi2 = 2 * M_PI;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wl = pi2 / plain[i];
    if (wl < 2048) {
      EXPECT_EQ(scaled[i], plain[i]) << i;  // high frequencies untouched
    } else if (wl > 8192) {
      EXPECT_NEAR(scaled[i], plain[i] / 8, 1e-7 * plain[i]) << i;
    } else {
      const double smooth = (8192 / wl - 1) / 3;
      EXPECT_NEAR(scaled[i], (1 - smooth) * plain[i] / 8 + smooth * plain[i], 1e-6 * plain[i]) << i;
    }
  }
  // The f32 values are torch's float32 chain: exactly representable floats, close to exact math.
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_EQ(plain[i], static_cast<double>(static_cast<float>(plain[i])));
    EXPECT_NEAR(plain[i], 1.0 / std::pow(theta, 2.0 * i / hd), 1e-6 * plain[i]);
  }
}

TEST(CpuKernels, HardConcreteValues) {
  Tensor la = Tensor::from_vector<double>({3.0, -10.0}, {2});
  // p_open = sigmoid(3 - (2/3) log(0.1 / 1.1)) = sigmoid(4.5986...) ~ 0.99003
  const double p = 1.0 / (1.0 + std::exp(-(3.0 - 2.0 / 3.0 * std::log(0.1 / 1.1))));
  auto po = ops::hard_concrete_p_open(la).to_vector<double>();
  EXPECT_NEAR(po[0], p, 1e-12);
  EXPECT_NEAR(po[0], 0.99003, 1e-5);
  // z_det(3) = clamp(sigmoid(3) * 1.2 - 0.1) = clamp(1.043) = 1; z_det(-10) = clamp(-0.09995) = 0
  expect_values(ops::hard_concrete_deterministic(la), {1.0, 0.0}, 0);
  // u = 1/2 makes the logistic noise zero: z = clamp(sigmoid(la / beta) * 1.2 - 0.1, 0, 1).
  Tensor zero = Tensor::from_vector<double>({0.0}, {1});
  Tensor half = Tensor::from_vector<double>({0.5}, {1});
  expect_values(ops::hard_concrete_sample(zero, half), {0.5}, 1e-15);
  // dz/dla at la = 0, u = 1/2: 1.2 * s (1 - s) / beta = 1.2 * 0.25 * 1.5 = 0.45
  Tensor one = Tensor::from_vector<double>({1.0}, {1});
  expect_values(ops::hard_concrete_sample_backward(one, zero, half), {0.45}, 1e-15);
  // Saturated at 1: the clamp blocks the gradient.
  Tensor big = Tensor::from_vector<double>({3.0}, {1});
  expect_values(ops::hard_concrete_sample_backward(one, big, half), {0.0}, 0);
}

TEST(CpuKernels, CrossEntropyAndFusedLinear) {
  // Row 0: logits [0, 0], target 0 -> ln 2. Row 1 ignored. Row 2: [ln 3, 0] target 1 -> ln 4.
  Tensor logits = Tensor::from_vector<double>({0, 0, 5, 7, std::log(3.0), 0}, {3, 2});
  Tensor targets = Tensor::from_vector<int64_t>({0, ops::kIgnoreIndex, 1}, {3});
  auto ce = ops::cross_entropy(logits, targets);
  EXPECT_EQ(ce.count, 2);
  EXPECT_NEAR(ce.loss_sum.item(), std::log(2.0) + std::log(4.0), 1e-14);
  Tensor d = ops::cross_entropy_backward(2.0, logits, targets, ce.lse);
  expect_values(d, {2 * (0.5 - 1), 2 * 0.5, 0, 0, 2 * 0.75, 2 * (0.25 - 1)}, 1e-14);

  // Fused: h = logits through W = identity gives the same numbers, whatever the chunk.
  Tensor w = Tensor::from_vector<double>({1, 0, 0, 1}, {2, 2});
  for (int64_t chunk : {1, 2, 256}) {
    op_counters() = {};
    auto f = ops::linear_cross_entropy(logits, w, targets, chunk);
    EXPECT_EQ(f.count, 2);
    EXPECT_NEAR(f.loss_sum.item(), ce.loss_sum.item(), 1e-14);
    const int64_t chunks = (3 + std::min<int64_t>(chunk, 3) - 1) / std::min<int64_t>(chunk, 3);
    EXPECT_EQ(op_counters().gemm, chunks);
    EXPECT_EQ(op_counters().gemm_flops, 2 * 3 * 2 * 2);
    op_counters() = {};
    auto g = ops::linear_cross_entropy_backward(2.0, logits, w, targets, f.lse, false, chunk);
    EXPECT_FALSE(g.dw.defined());
    EXPECT_EQ(op_counters().gemm, 2 * chunks);  // a frozen lm_head costs no dw GEMM
    expect_values(g.dh, d.to_vector<double>(), 1e-14);
    op_counters() = {};
    auto gw = ops::linear_cross_entropy_backward(2.0, logits, w, targets, f.lse, true, chunk);
    EXPECT_EQ(op_counters().gemm, 3 * chunks);
    // dw = G^T h
    Tensor dw_ref = ops::matmul(d, logits, true, false);
    EXPECT_LT(max_abs_diff(gw.dw, dw_ref), 1e-13);
  }
}

TEST(CpuKernels, AttentionUniformWeightsWithMemory) {
  // q = 0 makes every visible score 0: each query averages the values it can see, memory included.
  const int64_t hd = 2;
  Tensor q = Tensor::zeros({1, 2, 2, hd}, DType::f64);                  // H = 2 query heads
  Tensor k = Tensor::from_vector<double>({1, 2, 3, 4}, {1, 2, 1, hd});  // G = 1
  Tensor v = Tensor::from_vector<double>({10, 20, 30, 40}, {1, 2, 1, hd});
  Tensor mk = Tensor::from_vector<double>({5, 5}, {1, 1, 1, hd});
  Tensor mv = Tensor::from_vector<double>({1, 2}, {1, 1, 1, hd});
  auto r = ops::attention(q, k, v, mk, mv, 0.5);
  // query 0 sees [mem, v0]; query 1 sees [mem, v0, v1]; both heads alike.
  expect_values(r.out, {5.5, 11, 5.5, 11, 41.0 / 3, 62.0 / 3, 41.0 / 3, 62.0 / 3}, 1e-12);
  expect_values(r.lse, {std::log(2.0), std::log(2.0), std::log(3.0), std::log(3.0)}, 1e-12);
  // Without memory and with one real key the output is that key's value.
  auto r1 = ops::attention(q.slice(1, 0, 1), k.slice(1, 0, 1), v.slice(1, 0, 1), {}, {}, 0.5);
  expect_values(r1.out, {10, 20, 10, 20}, 1e-12);
  // dv: uniform p, dout = 1 everywhere, summed over both heads of the group.
  Tensor dout = Tensor::ones({1, 2, 2, hd}, DType::f64);
  auto g = ops::attention_backward(dout, q, k, v, mk, mv, r.out, r.lse, 0.5);
  // v0 gets 1/2 (query 0) + 1/3 (query 1) per head; v1 gets 1/3 per head; memory 1/2 + 1/3 per head.
  expect_values(g.dv, {5.0 / 3, 5.0 / 3, 2.0 / 3, 2.0 / 3}, 1e-12);
  expect_values(g.dmem_v, {5.0 / 3, 5.0 / 3}, 1e-12);
}

TEST(CpuKernels, AdamWFirstStep) {
  // Step 1: mhat = g and vhat = g^2, so the update is lr * g / (|g| + eps) after the decay p *= 1 - lr wd.
  Tensor p = Tensor::from_vector<float>({1.0f, -2.0f}, {2});
  Tensor g = Tensor::from_vector<float>({0.5f, -0.25f}, {2});
  Tensor m = Tensor::zeros({2}), v = Tensor::zeros({2});
  ops::AdamWConfig cfg{0.1, 0.9, 0.999, 1e-8, 0.1};
  ops::adamw_step_(p, g, m, v, cfg, 1);
  expect_values(p, {0.99 - 0.1, -1.98 + 0.1}, 1e-6);
  expect_values(m, {0.05, -0.025}, 1e-7);
  expect_values(v, {0.00025, 0.0000625}, 1e-9);
}

TEST(CpuKernels, GroupsEmbeddingAndReductions) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});  // rows 2, G 2, k 2
  Tensor z = Tensor::from_vector<float>({10, 0}, {2});
  expect_values(ops::mul_groups(x, z, 2), {10, 20, 0, 0, 50, 60, 0, 0}, 0);
  expect_values(ops::sum_groups_product(x, x, 2, 2), {1 + 4 + 25 + 36, 9 + 16 + 49 + 64}, 0);
  expect_values(ops::sum_to_last(x), {16, 20}, 0);
  expect_values(ops::sum(x), {36}, 0);
  Tensor table = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor ids = Tensor::from_vector<int32_t>({2, 0, 2}, {3});
  expect_values(ops::embedding(table, ids), {4, 5, 0, 1, 4, 5}, 0);
  Tensor dy = Tensor::ones({3, 2});
  expect_values(ops::embedding_backward(dy, ids, 3), {1, 1, 0, 0, 2, 2}, 0);
}

TEST(CpuKernels, ErrorsNameTheOpAndBothShapes) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  std::string e = error_of([&] { ops::add(a, b); });
  EXPECT_NE(e.find("add"), std::string::npos) << e;
  EXPECT_NE(e.find("[2, 3]"), std::string::npos) << e;
  EXPECT_NE(e.find("[3, 2]"), std::string::npos) << e;

  e = error_of([&] { ops::matmul(a, a); });
  EXPECT_NE(e.find("matmul"), std::string::npos) << e;
  EXPECT_NE(e.find("[2, 3]"), std::string::npos) << e;

  e = error_of([&] { ops::mul(a, Tensor::zeros({2, 3}, DType::f64)); });
  EXPECT_NE(e.find("f32"), std::string::npos) << e;
  EXPECT_NE(e.find("f64"), std::string::npos) << e;

  Tensor table = Tensor::zeros({4, 2});
  e = error_of([&] { ops::embedding(table, Tensor::from_vector<int64_t>({1, 4}, {2})); });
  EXPECT_NE(e.find("embedding"), std::string::npos) << e;
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;

  e = error_of([&] { ops::cross_entropy(Tensor::zeros({2, 3}), Tensor::from_vector<int32_t>({0, 3}, {2})); });
  EXPECT_NE(e.find("cross_entropy"), std::string::npos) << e;
  EXPECT_NE(e.find("target 3"), std::string::npos) << e;

  Tensor q = Tensor::zeros({1, 2, 3, 4}), k = Tensor::zeros({1, 2, 2, 4});
  e = error_of([&] { ops::attention(q, k, k, {}, {}, 0.5); });
  EXPECT_NE(e.find("not a multiple"), std::string::npos) << e;

  e = error_of([&] { ops::softmax(Tensor::zeros({2}, DType::i32)); });
  EXPECT_NE(e.find("softmax"), std::string::npos) << e;
  EXPECT_NE(e.find("i32"), std::string::npos) << e;
}

// A backend that lacks an op (an op landing CPU-first has no CUDA entry yet): the call fails with one
// line naming the op and the backend, instead of crashing on a null entry. The CPU table is replaced by
// a copy without rmsnorm for the duration of the test.
TEST(CpuKernels, MissingEntryNamesTheOpAndTheBackend) {
  Backend partial = backend_for(Device::cpu());
  partial.name = "cpu-without-rmsnorm";
  partial.rmsnorm = nullptr;
  register_backend(DeviceType::CPU, &partial);
  const Tensor x = Tensor::ones({2, 4}), w = Tensor::ones({4});
  const std::string e = error_of([&] { ops::rmsnorm(x, w, 1e-6); });
  const Tensor sum = ops::sum(x);  // the other entries still work
  register_backend(DeviceType::CPU, nullptr);  // back to the built-in CPU backend
  EXPECT_EQ(e, "op rmsnorm is not implemented on backend cpu-without-rmsnorm");
  EXPECT_EQ(sum.item(), 8.0);
  EXPECT_EQ(std::string(backend_for(Device::cpu()).name), "cpu");
  expect_values(ops::rmsnorm(x, w, 0).y, {1, 1, 1, 1, 1, 1, 1, 1}, 1e-6);
}
