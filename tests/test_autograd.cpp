// Autograd engine: accumulation, shared subexpressions, no-grad scope, and the promise that a frozen
// tensor costs no gradient work.
#include <gtest/gtest.h>

#include "autograd/functions.h"
#include "engine/ops/dispatch.h"
#include "engine/tensor/random.h"

namespace koff {
namespace {

namespace ag = autograd;
using ag::Variable;

TEST(Autograd, ChainRuleOnAHandComputedCase) {
  // f(a, b) = sum((a*b + a)^2) at a = [1, 2], b = [3, 4]:  df/da = 2(ab+a)(b+1), df/db = 2(ab+a)a
  Variable a(Tensor::from_vector<double>({1, 2}, {2}), true, "a");
  Variable b(Tensor::from_vector<double>({3, 4}, {2}), true, "b");
  Variable y = ag::add(ag::mul(a, b), a);
  Variable f = ag::sum(ag::mul(y, y));
  EXPECT_DOUBLE_EQ(f.data().item(), 16.0 + 100.0);
  f.backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{2 * 4 * 4, 2 * 10 * 5}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{2 * 4 * 1, 2 * 10 * 2}));
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Variable a(Tensor::from_vector<double>({1, 2, 3}, {3}), true);
  for (int i = 0; i < 3; ++i) ag::sum(ag::scale(a, 2.0)).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{6, 6, 6}));
  a.zero_grad();
  EXPECT_FALSE(a.grad().defined());
}

TEST(Autograd, SameInputTwiceDoesNotAlias) {
  // add's backward returns the same tensor for both inputs; accumulation must not write through it.
  Variable a(Tensor::from_vector<double>({1, 2}, {2}), true);
  ag::sum(ag::add(a, a)).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{2, 2}));
}

TEST(Autograd, NoGradScopeRecordsNothing) {
  Variable a(Tensor::from_vector<double>({1, 2}, {2}), true);
  {
    ag::NoGradGuard guard;
    Variable y = ag::mul(a, a);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_TRUE(y.is_leaf());
  }
  EXPECT_TRUE(ag::mul(a, a).requires_grad());
}

TEST(Autograd, SecondBackwardThroughReleasedGraphIsAnError) {
  Variable a(Tensor::from_vector<double>({1, 2}, {2}), true);
  Variable f = ag::sum(ag::mul(a, a));
  f.backward();
  EXPECT_THROW(f.backward(), Error);
}

TEST(Autograd, IntegerTensorsCannotRequireGrad) {
  EXPECT_THROW(Variable(Tensor::zeros({2}, DType::i64), true, "ids"), Error);
}

// The frozen base model promise: W frozen means no dW, and no GEMM spent on it.
TEST(Autograd, FrozenWeightCostsNoGradientGemm) {
  Tensor x0 = Tensor::full({4, 8}, 0.5), w0 = Tensor::full({6, 8}, 0.25), w1 = Tensor::full({3, 6}, 0.1);
  auto run = [&](bool train_weights) {
    Variable x(x0, true, "x"), w(w0, train_weights, "w"), v(w1, train_weights, "v");
    Variable loss = ag::sum(ag::linear(ag::linear(x, w), v));
    op_counters() = {};
    loss.backward();
    EXPECT_TRUE(x.grad().defined());
    EXPECT_EQ(w.grad().defined(), train_weights);
    EXPECT_EQ(v.grad().defined(), train_weights);
    return op_counters().gemm;
  };
  EXPECT_EQ(run(true), 4);   // two layers x (dx, dW)
  EXPECT_EQ(run(false), 2);  // two layers x dx only
  // With the input frozen too (token embeddings of a frozen model are inputs), the first layer
  // needs no gradient GEMM at all.
  Variable x(x0, false), w(w0, false), v(w1, true);
  Variable loss = ag::sum(ag::linear(ag::linear(x, w), v));
  op_counters() = {};
  loss.backward();
  EXPECT_EQ(op_counters().gemm, 1);  // dV only
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
}

TEST(Autograd, FrozenLmHeadSkipsWeightGradientInFusedLoss) {
  Tensor h0 = Tensor::full({5, 4}, 0.3), w0 = Tensor::full({9, 4}, 0.2);
  Tensor targets = Tensor::from_vector<int64_t>({1, 2, 3, 4, 5}, {5});
  for (bool train : {true, false}) {
    Variable h(h0, true), w(w0, train);
    Variable loss = ag::linear_cross_entropy(h, w, targets, 0, 2);
    op_counters() = {};
    loss.backward();
    EXPECT_EQ(w.grad().defined(), train);
    // 3 chunks of rows: one GEMM recomputes each chunk's logits, one makes dh, one more makes dW.
    EXPECT_EQ(op_counters().gemm, train ? 9 : 6);
  }
}

// With the lm_head frozen and the normaliser known (the KOFF step), the input gradient is made in the
// forward's own chunks (one logits GEMM per chunk instead of two); the backward makes no GEMM, and the
// gradient is bit for bit the one the backward pass computes (the same dloss, the same chunks), also
// rescaled when the loss is not the root (a seed of 0.5).
TEST(Autograd, FrozenLmHeadInputGradientComesFromTheForward) {
  const Tensor h0 = randn({7, 4}, Philox(3, 1)), w0 = randn({9, 4}, Philox(3, 2));
  const Tensor targets = Tensor::from_vector<int64_t>({1, 2, 3, 4, 5, 0, 8}, {7});
  for (double seed : {1.0, 0.5}) {
    Variable h(h0, true), w(w0, false);
    op_counters() = {};
    Variable loss = ag::scale(ag::linear_cross_entropy(h, w, targets, 7.0, 3), seed);
    EXPECT_EQ(op_counters().gemm, 6);  // 3 chunks: logits and dh each
    op_counters() = {};
    loss.backward();
    EXPECT_EQ(op_counters().gemm, 0);
    const auto ref = ops::linear_cross_entropy_backward(seed / 7.0, h0, w0, targets,
                                                        ops::linear_cross_entropy(h0, w0, targets, 3).lse, false, 3);
    // The forward forms the softmax as e_j / sum e (one exp per logit), the backward as exp(x_j - lse);
    // and for seed 0.5, dh of dloss 1/7 scaled by 0.5 against dh of dloss 0.5/7: f32 roundings apart.
    EXPECT_LE(max_rel_error(h.grad(), ref.dh), 1e-6);
  }
}

}  // namespace
}  // namespace koff
