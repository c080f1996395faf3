// The report's statistics (engine/koff/statistics.h) against independent references:
//  - CMH: published outputs of R's mantelhaen.test on two textbook data sets, to the digits
//    statsmodels 0.14.4 (StratifiedTable) gives, plus hand-computed single tables;
//  - bootstrap: properties with exact answers (identical rows, constant shifts, strata that fix the
//    replicate), the percentile against numpy, determinism, and coverage on synthetic data with a
//    known truth.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>
#include <random>
#include <string>

#include "engine/koff/statistics.h"
#include "engine/tensor/error.h"

namespace koff::offload {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------------
// Cochran-Mantel-Haenszel
// ---------------------------------------------------------------------------------------------------

// Reference values printed by statsmodels 0.14.4 (not a dependency of the project):
//   t = StratifiedTable([np.array([[a, b], [c, d]], float) for a, b, c, d in strata])
//   t.oddsratio_pooled, t.test_null_odds(correction=True), t.test_null_odds(correction=False)

// R's mantelhaen.test(correct = FALSE) on the stress x opinion x region table (health-policy example,
// Columbia MSPH P8120 notes, https://msph-p8120.github.io/cmh.html): "Mantel-Haenszel X-squared = 23.05,
// df = 1, p-value = 1.578e-06 ... common odds ratio 3.541726". Rows low/high stress, columns
// favorable/unfavorable, strata rural/urban.
TEST(CochranMantelHaenszel, HealthPolicyExampleMatchesR) {
  const std::vector<RemovalTable> tables = {{55, 135, 7, 53}, {48, 12, 96, 94}};
  const CmhResult r = cochran_mantel_haenszel(tables);
  EXPECT_TRUE(r.odds_ratio_finite);
  EXPECT_NEAR(r.odds_ratio, 3.541726, 1e-6);  // R, as printed
  EXPECT_NEAR(r.odds_ratio, 3.541726275631855, 1e-12);
  EXPECT_NEAR(r.chi_square_uncorrected, 23.05, 5e-3);  // R, as printed
  EXPECT_NEAR(r.chi_square_uncorrected, 23.05015543129741, 1e-10);
  EXPECT_NEAR(r.p_value_uncorrected, 1.5782974869260613e-06, 1e-16);
  EXPECT_NEAR(r.chi_square, 21.9816813462892, 1e-10);  // statsmodels, correction=True
  EXPECT_NEAR(r.p_value, 2.752652386028842e-06, 1e-16);
  EXPECT_EQ(r.strata, 2);
  EXPECT_EQ(r.informative_strata, 2);
  EXPECT_DOUBLE_EQ(r.specific_removal_rate, (55.0 + 48.0) / (55 + 135 + 48 + 12));
  EXPECT_DOUBLE_EQ(r.other_removal_rate, (7.0 + 96.0) / (7 + 53 + 96 + 94));
}

// Agresti (1990), Categorical Data Analysis, pp. 231-237: penicillin and rabbits, the example of R's
// ?mantelhaen.test ("=> p = 0.047"; R prints X-squared = 3.9286, common odds ratio 7). Rows immediate /
// 1.5 h delayed injection, columns cured / died, strata the five penicillin levels; levels 1/8 and 4
// have a zero column margin (no cure, or no death), carry no information and are skipped.
TEST(CochranMantelHaenszel, PenicillinRabbitsMatchesRAndSkipsZeroMargins) {
  const std::vector<RemovalTable> tables = {{0, 6, 0, 5}, {3, 3, 0, 6}, {6, 0, 2, 4}, {5, 1, 6, 0}, {2, 0, 5, 0}};
  const CmhResult r = cochran_mantel_haenszel(tables);
  EXPECT_EQ(r.strata, 5);
  EXPECT_EQ(r.informative_strata, 3);
  EXPECT_TRUE(r.odds_ratio_finite);
  EXPECT_NEAR(r.odds_ratio, 7.0, 1e-12);
  EXPECT_NEAR(r.chi_square, 3.928571428571429, 1e-12);  // = 55/14
  EXPECT_NEAR(r.p_value, 0.047472255142918196, 1e-14);
  EXPECT_NEAR(r.chi_square_uncorrected, 5.6571428571428575, 1e-12);
  EXPECT_NEAR(r.p_value_uncorrected, 0.01738442035206622, 1e-14);
  // Pooled rates count every stratum, the skipped ones too.
  EXPECT_DOUBLE_EQ(r.specific_removal_rate, 16.0 / 26.0);
  EXPECT_DOUBLE_EQ(r.other_removal_rate, 13.0 / 28.0);
  // Only the three informative levels: the same test.
  const std::vector<RemovalTable> informative = {tables[1], tables[2], tables[3]};
  const CmhResult s = cochran_mantel_haenszel(informative);
  EXPECT_EQ(s.odds_ratio, r.odds_ratio);
  EXPECT_EQ(s.chi_square, r.chi_square);
  EXPECT_EQ(s.chi_square_uncorrected, r.chi_square_uncorrected);
}

// One table by hand: a=2, b=0, c=0, d=3. n=5, E = 2*2/5 = 0.8, a-E = 1.2, V = 2*3*2*3/(25*4) = 0.36;
// chi2 = 1.44/0.36 = 4, corrected (1.2-0.5)^2/0.36 = 49/36; sum b c / n = 0 with a d / n > 0: OR = +inf.
TEST(CochranMantelHaenszel, ZeroDenominatorGivesInfiniteOddsRatio) {
  const std::vector<RemovalTable> tables = {{2, 0, 0, 3}};
  const CmhResult r = cochran_mantel_haenszel(tables);
  EXPECT_FALSE(r.odds_ratio_finite);
  EXPECT_TRUE(std::isinf(r.odds_ratio) && r.odds_ratio > 0);
  EXPECT_NEAR(r.excess_removed, 1.2, 1e-14);
  EXPECT_NEAR(r.chi_square_uncorrected, 4.0, 1e-12);
  EXPECT_NEAR(r.chi_square, 49.0 / 36.0, 1e-12);
  EXPECT_NEAR(r.p_value, 0.24334500914875917, 1e-14);  // scipy.stats.chi2.sf(49/36, 1)
}

TEST(CochranMantelHaenszel, NoInformativeStratumGivesNaN) {
  // n < 2, a zero row margin, a zero column margin.
  const std::vector<RemovalTable> tables = {{1, 0, 0, 0}, {0, 0, 4, 5}, {3, 0, 2, 0}};
  const CmhResult r = cochran_mantel_haenszel(tables);
  EXPECT_EQ(r.informative_strata, 0);
  EXPECT_FALSE(r.odds_ratio_finite);
  EXPECT_TRUE(std::isnan(r.odds_ratio));
  EXPECT_TRUE(std::isnan(r.chi_square) && std::isnan(r.p_value));
  EXPECT_TRUE(std::isnan(r.chi_square_uncorrected) && std::isnan(r.p_value_uncorrected));
  EXPECT_DOUBLE_EQ(r.specific_removal_rate, 4.0 / 4.0);
  EXPECT_DOUBLE_EQ(r.other_removal_rate, 6.0 / 11.0);
  // No stratum at all.
  const CmhResult e = cochran_mantel_haenszel({});
  EXPECT_TRUE(std::isnan(e.odds_ratio) && std::isnan(e.p_value) && std::isnan(e.specific_removal_rate));
}

// One table: OR_MH = a d / (b c). a=2, b=1, c=1, d=1: E = 9/5, a-E = 0.2 < 1/2, so no continuity
// correction (R's rule): V = 3*2*3*2/(25*4) = 0.36, chi2 = 0.04/0.36 either way.
TEST(CochranMantelHaenszel, SingleTableAndSmallDeviationWithoutCorrection) {
  const std::vector<RemovalTable> one = {{10, 20, 30, 40}};
  EXPECT_NEAR(cochran_mantel_haenszel(one).odds_ratio, 400.0 / 600.0, 1e-15);
  const std::vector<RemovalTable> small = {{2, 1, 1, 1}};
  const CmhResult r = cochran_mantel_haenszel(small);
  EXPECT_NEAR(r.chi_square_uncorrected, 0.04 / 0.36, 1e-14);
  EXPECT_EQ(r.chi_square, r.chi_square_uncorrected);
  EXPECT_EQ(r.p_value, r.p_value_uncorrected);
  EXPECT_THROW(cochran_mantel_haenszel(std::vector<RemovalTable>{{1, -1, 0, 0}}), Error);
}

TEST(CochranMantelHaenszel, ChiSquareSurvivalAtKnownQuantiles) {
  // scipy.stats.chi2.ppf(0.95, 1) and chi2.ppf(0.99, 1).
  EXPECT_NEAR(chi_square_1dof_survival(3.841458820694124), 0.05, 1e-14);
  EXPECT_NEAR(chi_square_1dof_survival(6.6348966010212145), 0.01, 1e-14);
  EXPECT_EQ(chi_square_1dof_survival(0.0), 1.0);
}

// ---------------------------------------------------------------------------------------------------
// Bootstrap
// ---------------------------------------------------------------------------------------------------

// Integer NLLs and tokens: every sum below is exact in double, so properties hold bit for bit.
SeedWindowNll integer_nll(int64_t seeds, int64_t windows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  SeedWindowNll nll(seeds, std::vector<double>(windows));
  for (auto& row : nll)
    for (double& v : row) v = static_cast<double>(100 + rng() % 400);
  return nll;
}

TEST(Bootstrap, PointEstimateByHand) {
  const SeedWindowNll nll = {{20, 50, 90}, {22, 48, 93}};
  const std::vector<double> tokens = {10, 20, 30};
  // sum nll = 323 over 2 seeds x 60 tokens.
  const BootstrapInterval r = bootstrap_perplexity(nll, tokens, {.replicates = 200});
  EXPECT_NEAR(r.estimate, std::exp(323.0 / 120.0), 1e-12);
  EXPECT_LE(r.lower, r.estimate);
  EXPECT_GE(r.upper, r.estimate);
  EXPECT_LT(r.lower, r.upper);
  EXPECT_FALSE(r.significant);
}

TEST(Bootstrap, IdenticalRowsGiveRatioOneAndDegenerateInterval) {
  const SeedWindowNll a = integer_nll(3, 40, 1);
  std::vector<double> tokens(40);
  for (size_t w = 0; w < tokens.size(); ++w) tokens[w] = 50 + static_cast<double>(w);
  const BootstrapInterval r = bootstrap_perplexity_ratio(a, a, tokens, {.keep_replicates = true});
  EXPECT_EQ(r.estimate, 1.0);
  EXPECT_EQ(r.lower, 1.0);
  EXPECT_EQ(r.upper, 1.0);
  EXPECT_FALSE(r.significant);
  ASSERT_EQ(r.replicates.size(), 2000u);
  for (double v : r.replicates) EXPECT_EQ(v, 1.0);
}

// nll_A = nll_B + delta * tokens on every (seed, window): every replicate is exp(delta) exactly.
TEST(Bootstrap, ConstantShiftGivesExactRatio) {
  const SeedWindowNll b = integer_nll(4, 30, 2);
  std::vector<double> tokens(30);
  for (size_t w = 0; w < tokens.size(); ++w) tokens[w] = static_cast<double>(8 * (w + 1));
  for (double delta : {0.125, -0.25}) {
    SeedWindowNll a = b;
    for (auto& row : a)
      for (size_t w = 0; w < row.size(); ++w) row[w] += delta * tokens[w];
    const BootstrapInterval r = bootstrap_perplexity_ratio(a, b, tokens, {.replicates = 500, .seed = 7});
    EXPECT_EQ(r.estimate, std::exp(delta));
    EXPECT_EQ(r.lower, std::exp(delta));
    EXPECT_EQ(r.upper, std::exp(delta));
    EXPECT_TRUE(r.significant);
  }
  // One row: nll = c * tokens everywhere gives perplexity exp(c) with a degenerate interval.
  SeedWindowNll flat(2, std::vector<double>(30));
  for (auto& row : flat)
    for (size_t w = 0; w < row.size(); ++w) row[w] = 2.5 * tokens[w];
  const BootstrapInterval p = bootstrap_perplexity(flat, tokens, {.replicates = 300});
  EXPECT_EQ(p.estimate, std::exp(2.5));
  EXPECT_EQ(p.lower, std::exp(2.5));
  EXPECT_EQ(p.upper, std::exp(2.5));
  EXPECT_FALSE(p.significant);
}

// Pooled domains with a different shift each: resampling windows across domains moves the mix and so
// the ratio; resampling within domains (window_strata) keeps each domain's window and token count, so
// every replicate equals the estimate. Domain 0: 20 windows of 100 tokens, shift 0.25 (25 nats per
// window); domain 1: 10 windows of 50 tokens, shift 0.75 (37.5 nats per window).
TEST(Bootstrap, StrataKeepTheDomainMixOfPooledWindows) {
  const SeedWindowNll b = integer_nll(3, 30, 3);
  std::vector<double> tokens(30);
  std::vector<int64_t> domain(30);
  SeedWindowNll a = b;
  for (int64_t w = 0; w < 30; ++w) {
    domain[w] = w < 20 ? 0 : 1;
    tokens[w] = w < 20 ? 100 : 50;
    for (auto& row : a) row[w] += w < 20 ? 25.0 : 37.5;
  }
  const double expected = std::exp((20 * 25.0 + 10 * 37.5) / (20 * 100.0 + 10 * 50.0));
  const BootstrapInterval within = bootstrap_perplexity_ratio(a, b, tokens, {.replicates = 500}, domain);
  EXPECT_EQ(within.estimate, expected);
  EXPECT_EQ(within.lower, expected);
  EXPECT_EQ(within.upper, expected);
  const BootstrapInterval across = bootstrap_perplexity_ratio(a, b, tokens, {.replicates = 500});
  EXPECT_EQ(across.estimate, expected);
  EXPECT_GT(across.upper - across.lower, 1e-2);
  EXPECT_THROW(bootstrap_perplexity_ratio(a, b, tokens, {}, std::vector<int64_t>(29, 0)), Error);
}

// A one-seed row (dense) is the same as that row repeated for every seed of the other.
TEST(Bootstrap, SingleSeedRowPairsWithEverySeed) {
  const SeedWindowNll a = integer_nll(3, 25, 4);
  const SeedWindowNll dense = integer_nll(1, 25, 5);
  const SeedWindowNll repeated = {dense[0], dense[0], dense[0]};
  std::vector<double> tokens(25, 120);
  // 401 replicates: the 2.5% and 97.5% points fall on order statistics (h = 10 and 390), so the
  // interval of 1/ratio is the reciprocal of the interval of the ratio.
  const BootstrapOptions o{.replicates = 401, .seed = 9, .keep_replicates = true};
  const BootstrapInterval x = bootstrap_perplexity_ratio(a, dense, tokens, o);
  const BootstrapInterval y = bootstrap_perplexity_ratio(a, repeated, tokens, o);
  EXPECT_EQ(x.estimate, y.estimate);
  EXPECT_EQ(x.lower, y.lower);
  EXPECT_EQ(x.upper, y.upper);
  EXPECT_EQ(x.replicates, y.replicates);
  // Swapping the rows inverts the ratio, replicate by replicate.
  const BootstrapInterval z = bootstrap_perplexity_ratio(dense, a, tokens, o);
  EXPECT_NEAR(z.estimate * x.estimate, 1.0, 1e-14);
  for (size_t i = 0; i < x.replicates.size(); ++i) EXPECT_NEAR(z.replicates[i] * x.replicates[i], 1.0, 1e-14);
  EXPECT_NEAR(z.lower * x.upper, 1.0, 1e-12);
  EXPECT_NEAR(z.upper * x.lower, 1.0, 1e-12);
}

TEST(Bootstrap, DeterministicForASeed) {
  const SeedWindowNll a = integer_nll(3, 50, 6), b = integer_nll(3, 50, 7);
  std::vector<double> tokens(50, 200);
  const BootstrapInterval r1 = bootstrap_perplexity_ratio(a, b, tokens, {.seed = 11, .keep_replicates = true});
  const BootstrapInterval r2 = bootstrap_perplexity_ratio(a, b, tokens, {.seed = 11, .keep_replicates = true});
  const BootstrapInterval r3 = bootstrap_perplexity_ratio(a, b, tokens, {.seed = 12, .keep_replicates = true});
  EXPECT_EQ(r1.replicates, r2.replicates);
  EXPECT_EQ(r1.lower, r2.lower);
  EXPECT_EQ(r1.upper, r2.upper);
  EXPECT_NE(r1.replicates, r3.replicates);
  EXPECT_EQ(r1.estimate, r3.estimate);
}

TEST(Bootstrap, RejectsMismatchedInputs) {
  const SeedWindowNll a = integer_nll(3, 10, 8);
  std::vector<double> tokens(10, 10);
  EXPECT_THROW(bootstrap_perplexity_ratio(a, integer_nll(2, 10, 9), tokens), Error);  // 3 vs 2 seeds
  EXPECT_THROW(bootstrap_perplexity_ratio(a, integer_nll(3, 9, 9), tokens), Error);   // windows
  EXPECT_THROW(bootstrap_perplexity(a, std::vector<double>(9, 10)), Error);           // tokens
  EXPECT_THROW(bootstrap_perplexity(a, std::vector<double>(10, 0)), Error);           // no tokens
  EXPECT_THROW(bootstrap_perplexity(a, tokens, {.replicates = 0}), Error);
  EXPECT_THROW(bootstrap_perplexity(a, tokens, {.level = 1.0}), Error);
  SeedWindowNll ragged = a;
  ragged[1].pop_back();
  EXPECT_THROW(bootstrap_perplexity(ragged, tokens), Error);
  SeedWindowNll inf = a;
  inf[0][0] = std::numeric_limits<double>::infinity();
  EXPECT_THROW(bootstrap_perplexity(inf, tokens), Error);
}

// The interval is numpy's np.percentile(replicates, [2.5, 97.5]) of the replicates it returns.
TEST(Bootstrap, PercentileIntervalMatchesNumpy) {
  EXPECT_DOUBLE_EQ(percentile_linear({4, 1, 3, 2}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(percentile_linear({4, 1, 3, 2}, 0.25), 1.75);
  EXPECT_DOUBLE_EQ(percentile_linear({7}, 0.9), 7.0);

  const SeedWindowNll a = integer_nll(4, 60, 10), b = integer_nll(4, 60, 11);
  std::vector<double> tokens(60);
  for (size_t w = 0; w < tokens.size(); ++w) tokens[w] = 100 + 3 * static_cast<double>(w);
  const BootstrapInterval r =
      bootstrap_perplexity_ratio(a, b, tokens, {.replicates = 1999, .seed = 3, .keep_replicates = true});
  const fs::path dir = fs::temp_directory_path() / "koff_test_statistics";
  fs::create_directories(dir);
  {
    std::ofstream out(dir / "replicates.txt");
    out.precision(17);
    for (double v : r.replicates) out << v << "\n";
  }
  const std::string cmd = std::string(KOFF_PYTHON) + " " + KOFF_PERCENTILE_SCRIPT + " " +
                          (dir / "replicates.txt").string() + " " + (dir / "numpy.txt").string() + " 2.5 97.5";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(dir / "numpy.txt");
  double lower = 0, upper = 0;
  ASSERT_TRUE(in >> lower >> upper);
  EXPECT_NEAR(r.lower, lower, 1e-15 * lower);
  EXPECT_NEAR(r.upper, upper, 1e-15 * upper);
  EXPECT_LT(r.lower, r.upper);
  fs::remove_all(dir);
}

// Standard normal by Box-Muller on the engine's own uniforms (std::normal_distribution's algorithm is
// the library's choice; these draws are the same everywhere).
struct Normal {
  std::mt19937_64 rng;
  double operator()() {
    const double u1 = (static_cast<double>(rng() >> 11) + 1) * 0x1.0p-53,
                 u2 = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    return std::sqrt(-2 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2);
  }
};

// Coverage on synthetic rows with a known truth. Per trial: W windows of random length with a
// difficulty u_w shared by both rows (what pairing cancels), a per-seed offset v_s in A only (training
// noise), and per-(seed, window) noise shrinking with the window's length:
//   mean NLL of A on (s, w) = 3.0 + u_w + v_s + e_sw,   of B = 2.9 + u_w + e_w,   truth: ratio e^0.1,
//   perplexity of A e^3.0 (u, v, e all mean 0).
// 200 trials: the 95% intervals must cover the truth in 95% +- 3 binomial standard deviations
// (sd = sqrt(.95 * .05 / 200) = 1.5%) of trials, and be as wide as the spread of the estimates across
// trials says they should be (not merely covering by being wide).
TEST(Bootstrap, CoverageOnSyntheticDataWithKnownTruth) {
  const int64_t seeds = 5, windows = 60, trials = 200;
  Normal normal{std::mt19937_64(2024)};
  int64_t ratio_covered = 0, ppl_covered = 0;
  double width_sum = 0, log_sum = 0, log_sq = 0;
  for (int64_t t = 0; t < trials; ++t) {
    std::vector<double> tokens(windows), u(windows), v(seeds);
    for (int64_t w = 0; w < windows; ++w) {
      tokens[w] = static_cast<double>(50 + normal.rng() % 100);
      u[w] = 0.3 * normal();
    }
    for (double& x : v) x = 0.02 * normal();
    SeedWindowNll a(seeds, std::vector<double>(windows)), b(1, std::vector<double>(windows));
    for (int64_t w = 0; w < windows; ++w) {
      const double noise_sd = 0.05 / std::sqrt(tokens[w] / 100);
      b[0][w] = tokens[w] * (2.9 + u[w] + noise_sd * normal());
      for (int64_t s = 0; s < seeds; ++s) a[s][w] = tokens[w] * (3.0 + u[w] + v[s] + noise_sd * normal());
    }
    const BootstrapOptions o{.replicates = 1000, .seed = static_cast<uint64_t>(t)};
    const BootstrapInterval r = bootstrap_perplexity_ratio(a, b, tokens, o);
    ratio_covered += r.lower <= std::exp(0.1) && std::exp(0.1) <= r.upper;
    const BootstrapInterval p = bootstrap_perplexity(a, tokens, o);
    ppl_covered += p.lower <= std::exp(3.0) && std::exp(3.0) <= p.upper;
    width_sum += std::log(r.upper) - std::log(r.lower);
    log_sum += std::log(r.estimate);
    log_sq += std::log(r.estimate) * std::log(r.estimate);
  }
  const double ratio_coverage = static_cast<double>(ratio_covered) / trials;
  const double ppl_coverage = static_cast<double>(ppl_covered) / trials;
  RecordProperty("ratio_coverage", std::to_string(ratio_coverage));
  RecordProperty("perplexity_coverage", std::to_string(ppl_coverage));
  EXPECT_GE(ratio_coverage, 0.905);
  EXPECT_LE(ratio_coverage, 0.995);
  EXPECT_GE(ppl_coverage, 0.905);
  EXPECT_LE(ppl_coverage, 0.995);
  // Mean half-width on the log scale against 1.96 x the estimates' standard deviation across trials.
  const double mean = log_sum / trials, sd = std::sqrt(log_sq / trials - mean * mean);
  const double half_width = width_sum / trials / 2;
  RecordProperty("half_width_over_1.96sd", std::to_string(half_width / (1.96 * sd)));
  EXPECT_NEAR(half_width / (1.96 * sd), 1.0, 0.25) << "half-width " << half_width << ", sd " << sd;
}

}  // namespace
}  // namespace koff::offload
