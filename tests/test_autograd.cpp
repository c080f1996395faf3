// Autograd engine: accumulation, shared subexpressions, no-grad scope, and the promise that a frozen
// tensor costs no gradient work.
#include <gtest/gtest.h>

#include "autograd/functions.h"
#include "engine/ops/dispatch.h"

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

}  // namespace
}  // namespace koff
