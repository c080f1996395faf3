// The statistics of the experiment report (KOFF_METHOD.md sections 8 and 9): pure functions of
// numbers already measured, no model.
//
// 1. Paired bootstrap over (seeds, windows), for the perplexity table (section 8).
//    A row of the table (dense, prune-only, KOFF, ...) is, per training seed s and evaluation window
//    w, the summed negative log-likelihood nll[s][w] of the window's tokens[w] tokens. Over a
//    multiset of seeds S* and windows W* (repeats counted),
//        mean_nll = sum_{s in S*, w in W*} nll[s][w] / (|S*| * sum_{w in W*} tokens[w])
//    (the seeds averaged, the windows token-weighted), and
//        perplexity = exp(mean_nll),   ratio(A, B) = exp(mean_nll_A - mean_nll_B).
//    The point estimate takes every seed and window once. A replicate draws |S| seeds with
//    replacement AND |W| windows with replacement, the same indices for both rows (the comparison is
//    paired: same windows, and seed s of A against seed s of B), and recomputes the statistic; the
//    interval is the (1-level)/2 and (1+level)/2 percentiles of the replicates (numpy's default
//    "linear" percentile). Resampling both seeds and windows puts both sources of noise in the
//    interval: training randomness (seeds) and the finite evaluation set (windows).
//    Use: bootstrap_perplexity for a cell's "ppl [lo, hi]" (or ±) figure; bootstrap_perplexity_ratio
//    for "is row A different from row B": the report marks the difference significant when the ratio's
//    interval excludes 1. Several domains pooled: concatenate their windows (a "window" is then a
//    (domain, window) pair) and pass each window's domain as `window_strata`, so that replicates
//    resample windows within each domain and keep the domains' mix fixed.
//    A row with ONE seed (the dense model, which nothing random trains) is paired with every seed of
//    the other row: it stands for a row whose seeds are all equal.
//    The RNG is std::mt19937_64 seeded with `seed`, drawn through an unbiased bounded draw of our own
//    (not std::uniform_int_distribution, whose algorithm the standard leaves to the library): the same
//    seed gives the same interval on every platform.
//
// 2. Cochran-Mantel-Haenszel test, for the LAPE claim (section 9): are language-specific neurons
//    removed at a different rate than the other neurons, stratified by layer (and seed)? Per stratum k
//    a 2x2 table
//                   removed  kept
//        specific      a      b
//        other         c      d          n = a + b + c + d
//    Mantel-Haenszel common odds ratio  OR_MH = sum_k (a d / n) / sum_k (b c / n);
//    CMH statistic, 1 dof, with E_k = (a+b)(a+c)/n and V_k = (a+b)(c+d)(a+c)(b+d) / (n^2 (n-1)):
//        chi2 = (|sum_k (a - E_k)| - 1/2)^2 / sum_k V_k,
//    the 1/2 being the continuity correction of R's mantelhaen.test(correct = TRUE): applied only when
//    |sum (a - E)| >= 1/2 (it would otherwise raise the statistic); also given without it.
//    p = P(chi2_1 > chi2) = erfc(sqrt(chi2 / 2)). OR_MH > 1: specific neurons are removed more often
//    than the others of their stratum. A stratum with n < 2 or a zero margin carries no information
//    (its a - E_k and V_k are 0) and is skipped, which changes no sum; pooled removal rates count
//    every stratum. Use: the report's "LAPE-specific removed x% vs others y%, OR_MH, p" line.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace koff::offload {

// ---------------------------------------------------------------------------------------------------
// Paired bootstrap over (seeds, windows)
// ---------------------------------------------------------------------------------------------------

// One row of the experiment table: nll[s][w] = summed NLL (nats) of window w under seed s's model.
// Every seed has the same windows (the same count, in the same order).
using SeedWindowNll = std::vector<std::vector<double>>;

struct BootstrapOptions {
  int64_t replicates = 2000;
  uint64_t seed = 0;
  double level = 0.95;
  bool keep_replicates = false;  // return every replicate's statistic, in draw order
};

struct BootstrapInterval {
  double estimate = 0;          // the statistic on all seeds and windows
  double lower = 0, upper = 0;  // the percentile interval at options.level
  // Ratio only: the interval excludes 1 (lower > 1 or upper < 1). Always false for one row.
  bool significant = false;
  std::vector<double> replicates;  // when options.keep_replicates
};

// Perplexity exp(mean_nll) of one row with its percentile interval.
// tokens: [W] tokens per window (> 0 in total); window_strata: empty (all windows one stratum) or
// [W] a stratum id per window (the domain when domains are pooled); windows resample within strata.
BootstrapInterval bootstrap_perplexity(const SeedWindowNll& nll, std::span<const double> tokens,
                                       const BootstrapOptions& options = {},
                                       std::span<const int64_t> window_strata = {});

// Perplexity ratio exp(mean_nll_A - mean_nll_B) of two rows on the same windows, paired: seeds and
// windows resampled with the same indices for both. A and B have the same number of seeds, or one of
// them has one seed (paired with every seed of the other).
BootstrapInterval bootstrap_perplexity_ratio(const SeedWindowNll& a, const SeedWindowNll& b,
                                             std::span<const double> tokens, const BootstrapOptions& options = {},
                                             std::span<const int64_t> window_strata = {});

// The q-quantile (q in [0, 1]) of `values` by linear interpolation between order statistics, numpy's
// default: h = (n-1) q, x[floor h] + (h - floor h)(x[floor h + 1] - x[floor h]) on the sorted values.
double percentile_linear(std::vector<double> values, double q);

// ---------------------------------------------------------------------------------------------------
// Cochran-Mantel-Haenszel test over 2x2 tables
// ---------------------------------------------------------------------------------------------------

// One stratum (a layer, or a (layer, seed) pair): counts of neurons.
struct RemovalTable {
  int64_t specific_removed = 0, specific_kept = 0;  // a, b
  int64_t other_removed = 0, other_kept = 0;        // c, d
};

struct CmhResult {
  // Mantel-Haenszel common odds ratio (specific vs other, removed vs kept). When sum b c / n = 0 it
  // is +inf (some a d / n > 0) or NaN (no informative stratum, or every a d and b c zero);
  // odds_ratio_finite says which case holds.
  double odds_ratio = 0;
  bool odds_ratio_finite = false;
  double chi_square = 0;  // with the continuity correction (R's mantelhaen.test default)
  double p_value = 0;     // erfc(sqrt(chi_square / 2))
  double chi_square_uncorrected = 0;
  double p_value_uncorrected = 0;
  // sum_k a - sum_k E_k: how many more specific neurons were removed than independence predicts.
  double excess_removed = 0;
  // Pooled over ALL strata: sum a / sum (a + b) and sum c / sum (c + d) (NaN for an empty group).
  double specific_removal_rate = 0, other_removal_rate = 0;
  int64_t strata = 0;              // tables given
  int64_t informative_strata = 0;  // n >= 2 and no zero margin; without any, chi-squares and p are NaN
};

CmhResult cochran_mantel_haenszel(std::span<const RemovalTable> tables);

// P(X > x) for X chi-square with 1 degree of freedom: erfc(sqrt(x / 2)).
double chi_square_1dof_survival(double x);

}  // namespace koff::offload
