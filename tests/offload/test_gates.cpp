// Hard-concrete gates and sparsity control against direct computation: Monte Carlo over the
// sampling formula, exact enumeration of the expected kept size, finite differences, and the final
// mask's target.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "engine/koff/gates.h"

namespace koff::offload {
namespace {

namespace ag = autograd;

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// z(u) of the definition, for the numerical integral of its moments.
double z_of(double la, double u) {
  using HC = ops::HardConcrete;
  double s = sigmoid((std::log(u) - std::log(1 - u) + la) / HC::beta);
  return std::clamp(s * (HC::zeta - HC::gamma) + HC::gamma, 0.0, 1.0);
}

TEST(HardConcrete, SamplesMatchTheirDistribution) {
  const std::vector<double> las = {-2.0, 0.0, 1.5, 3.0};
  const int64_t n = 200000;
  for (double la : las) {
    Tensor log_alpha = Tensor::full({n}, la, DType::f64);
    Tensor u = rand_uniform({n}, Philox(42, static_cast<uint64_t>(la * 100 + 1000)), 0, 1, DType::f64);
    auto z = ops::hard_concrete_sample(log_alpha, u).to_vector<double>();
    double open = 0, mean = 0, sq = 0;
    for (double v : z) {
      open += v != 0;
      mean += v;
      sq += v * v;
    }
    open /= n, mean /= n, sq /= n;
    // P(z != 0) against the closed form p_open.
    const double p = ops::hard_concrete_p_open(Tensor::full({1}, la, DType::f64)).item();
    EXPECT_NEAR(open, p, 4 * std::sqrt(p * (1 - p) / n) + 1e-4) << "log_alpha " << la;
    // First and second moments against a fine midpoint integral over u.
    double m1 = 0, m2 = 0;
    const int K = 2000000;
    for (int k = 0; k < K; ++k) {
      double zz = z_of(la, (k + 0.5) / K);
      m1 += zz, m2 += zz * zz;
    }
    m1 /= K, m2 /= K;
    EXPECT_NEAR(mean, m1, 0.005) << "log_alpha " << la;
    EXPECT_NEAR(sq, m2, 0.005) << "log_alpha " << la;
  }
  // The init (log_alpha = 3) starts whole: p_open about 0.99 and z_det = 1.
  EXPECT_NEAR(ops::hard_concrete_p_open(Tensor::full({1}, 3.0, DType::f64)).item(), 0.99, 0.005);
  EXPECT_EQ(ops::hard_concrete_deterministic(Tensor::full({1}, 3.0, DType::f64)).item(), 1.0);
}

UnitCosts small_costs() {
  UnitCosts c;
  c.layers = 2, c.heads = 4, c.kv_heads = 2, c.neurons = 3;
  c.head = 10, c.group = 7, c.neuron = 4;
  return c;
}

TEST(Sparsity, ExpectedKeptEqualsExactEnumeration) {
  UnitCosts c = small_costs();
  std::vector<double> ph = {0.1, 0.8, 0.5, 0.3}, pn = {0.2, 0.9, 0.6};
  ag::Variable e = expected_kept(ag::Variable(Tensor::from_vector(ph, {4})), ag::Variable(Tensor::from_vector(pn, {3})), c);
  // Enumerate all 2^4 head states (independent Bernoulli gates).
  double want = 0;
  for (int mask = 0; mask < 16; ++mask) {
    double prob = 1, kept = 0;
    for (int h = 0; h < 4; ++h) {
      bool open = mask >> h & 1;
      prob *= open ? ph[h] : 1 - ph[h];
      kept += open * c.head;
    }
    for (int g = 0; g < 2; ++g) kept += ((mask >> (2 * g)) & 3) ? c.group : 0;
    want += prob * kept;
  }
  for (double p : pn) want += p * c.neuron;
  EXPECT_NEAR(e.data().item(), want, 1e-12);
}

TEST(Sparsity, ExpectedSparsityGradientMatchesFiniteDifferences) {
  UnitCosts c = small_costs();
  std::vector<ag::Variable> inputs = {
      ag::Variable(rand_uniform({4}, Philox(3, 1), -2, 2, DType::f64), true, "heads"),
      ag::Variable(rand_uniform({3}, Philox(3, 2), -2, 2, DType::f64), true, "neurons")};
  auto f = [&](const std::vector<ag::Variable>& v) {
    return expected_kept(ag::hard_concrete_p_open(v[0]), ag::hard_concrete_p_open(v[1]), c);
  };
  ag::GradcheckResult r = ag::gradcheck(f, inputs, 1e-6, 1e-8, 1e-6);
  EXPECT_TRUE(r.ok) << r.first_failure;
}

TEST(Sparsity, StartsNearZeroAndCountsGroupsOnce) {
  HardConcreteGates gates(small_costs(), 3.0);
  const double s = gates.expected_sparsity().data().item();
  // p_open(3) ~ 0.99 for every unit: about 1% of heads/neurons, groups almost never.
  EXPECT_GT(s, 0.0);
  EXPECT_LT(s, 0.02);
  for (auto& v : gates.head_log_alpha()) v.mutable_data().fill_(-20.0);
  for (auto& v : gates.neuron_log_alpha()) v.mutable_data().fill_(-20.0);
  EXPECT_NEAR(gates.expected_sparsity().data().item(), 1.0, 1e-6);
}

TEST(Gates, SampleIsAFunctionOfSeedAndStep) {
  HardConcreteGates gates(small_costs(), 0.5);
  auto a = gates.sample(7, 12), b = gates.sample(7, 12), c = gates.sample(7, 13);
  EXPECT_EQ(max_abs_diff(a.heads[1].data(), b.heads[1].data()), 0.0);
  EXPECT_EQ(max_abs_diff(a.neurons[0].data(), b.neurons[0].data()), 0.0);
  EXPECT_GT(max_abs_diff(a.heads[1].data(), c.heads[1].data()), 0.0);
}

TEST(FinalMask, HitsTheTargetWithinOneUnit) {
  UnitCosts c;
  c.layers = 3, c.heads = 8, c.kv_heads = 2, c.neurons = 40;
  c.head = 2 * 64 * 16, c.group = 2 * 64 * 16, c.neuron = 3 * 64;
  HardConcreteGates gates(c);
  Philox rng(11, 0);
  uint64_t k = 0;
  for (auto* group : {&gates.head_log_alpha(), &gates.neuron_log_alpha()})
    for (auto& v : *group) v.mutable_data().copy_(rand_uniform(v.shape(), rng, -3, 3, DType::f32, (k += 1000)));
  for (double t : {0.0, 0.05, 0.12, 0.25, 0.4, 0.9}) {
    FinalMask m = final_mask(gates, t);
    EXPECT_GE(m.removed, t * c.prunable());
    EXPECT_LT(m.removed - t * c.prunable(), c.head + c.group) << "target " << t;
    // The mask removes the least probable units first.
    double max_removed = -1, min_kept = 2;
    for (int64_t l = 0; l < c.layers; ++l) {
      auto p = ops::hard_concrete_p_open(gates.neuron_log_alpha()[l].data()).to_vector<double>();
      for (int64_t i = 0; i < c.neurons; ++i) {
        if (m.keep_neurons[l][i]) min_kept = std::min(min_kept, p[i]);
        else max_removed = std::max(max_removed, p[i]);
      }
    }
    if (max_removed >= 0) {
      EXPECT_LE(max_removed, min_kept);
    }
  }
  EXPECT_THROW(final_mask(gates, 1.0), Error);
  EXPECT_THROW(final_mask(gates, -0.1), Error);
}

}  // namespace
}  // namespace koff::offload
