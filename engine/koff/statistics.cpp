#include "engine/koff/statistics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "engine/tensor/error.h"

namespace koff::offload {
namespace {

// Uniform in [0, n) from a 64-bit engine, by rejection: unbiased, and the same sequence with every
// standard library (std::uniform_int_distribution's algorithm is implementation-defined).
uint64_t draw_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do x = rng();
  while (x >= limit);
  return x % n;
}

void check_options(const BootstrapOptions& options) {
  KOFF_CHECK(options.replicates >= 1, "bootstrap: replicates must be >= 1, got {}", options.replicates);
  KOFF_CHECK(options.level > 0 && options.level < 1, "bootstrap: level must be in (0, 1), got {}", options.level);
}

// Checks one row against the window count (taken from the first seed when windows < 0) and returns it.
int64_t check_row(const SeedWindowNll& nll, const char* name, int64_t windows) {
  KOFF_CHECK(!nll.empty(), "bootstrap: row {} has no seeds", name);
  if (windows < 0) windows = static_cast<int64_t>(nll[0].size());
  KOFF_CHECK(windows > 0, "bootstrap: row {} has no windows", name);
  for (size_t s = 0; s < nll.size(); ++s) {
    KOFF_CHECK(static_cast<int64_t>(nll[s].size()) == windows,
               "bootstrap: row {} seed {} has {} windows, expected {} (every seed and row has the same windows)", name,
               s, nll[s].size(), windows);
    for (size_t w = 0; w < nll[s].size(); ++w)
      KOFF_CHECK(std::isfinite(nll[s][w]), "bootstrap: row {} nll[{}][{}] = {} is not finite", name, s, w, nll[s][w]);
  }
  return windows;
}

// The windows of each stratum, strata in ascending id order (one stratum when none are given).
std::vector<std::vector<int64_t>> group_windows(int64_t windows, std::span<const double> tokens,
                                                std::span<const int64_t> strata) {
  KOFF_CHECK(static_cast<int64_t>(tokens.size()) == windows, "bootstrap: {} token counts for {} windows", tokens.size(),
             windows);
  double total = 0;
  for (size_t w = 0; w < tokens.size(); ++w) {
    KOFF_CHECK(std::isfinite(tokens[w]) && tokens[w] >= 0, "bootstrap: tokens[{}] = {} is not a count", w, tokens[w]);
    total += tokens[w];
  }
  KOFF_CHECK(total > 0, "bootstrap: the windows hold no tokens");
  KOFF_CHECK(strata.empty() || static_cast<int64_t>(strata.size()) == windows,
             "bootstrap: {} window strata for {} windows", strata.size(), windows);
  std::map<int64_t, std::vector<int64_t>> by_id;
  for (int64_t w = 0; w < windows; ++w) by_id[strata.empty() ? 0 : strata[w]].push_back(w);
  std::vector<std::vector<int64_t>> groups;
  for (auto& [id, members] : by_id) groups.push_back(std::move(members));
  return groups;
}

// The common engine: x[s][w] is the per-(seed, window) summed log-likelihood quantity (one row's nll,
// or A's minus B's), and a statistic is exp(sum_{s,w} c_s c_w x[s][w] / (S sum_w c_w tokens[w])) for
// seed counts c_s (summing to S) and window counts c_w.
BootstrapInterval bootstrap(const std::vector<std::vector<double>>& x, std::span<const double> tokens,
                            const std::vector<std::vector<int64_t>>& groups, const BootstrapOptions& options,
                            bool ratio) {
  const int64_t seeds = static_cast<int64_t>(x.size()), windows = static_cast<int64_t>(tokens.size());
  auto statistic = [&](const std::vector<double>& seed_count, const std::vector<double>& window_count) {
    double num = 0, den = 0;
    for (int64_t s = 0; s < seeds; ++s) {
      if (seed_count[s] == 0) continue;
      double row = 0;
      for (int64_t w = 0; w < windows; ++w) row += window_count[w] * x[s][w];
      num += seed_count[s] * row;
    }
    for (int64_t w = 0; w < windows; ++w) den += window_count[w] * tokens[w];
    return std::exp(num / (static_cast<double>(seeds) * den));
  };

  BootstrapInterval out;
  out.estimate = statistic(std::vector<double>(seeds, 1.0), std::vector<double>(windows, 1.0));

  std::mt19937_64 rng(options.seed);
  std::vector<double> reps(options.replicates);
  std::vector<double> seed_count(seeds), window_count(windows);
  for (int64_t r = 0; r < options.replicates; ++r) {
    std::fill(seed_count.begin(), seed_count.end(), 0.0);
    std::fill(window_count.begin(), window_count.end(), 0.0);
    for (int64_t i = 0; i < seeds; ++i) seed_count[draw_below(rng, seeds)] += 1;
    for (const auto& group : groups)
      for (size_t i = 0; i < group.size(); ++i) window_count[group[draw_below(rng, group.size())]] += 1;
    // A resampled stratum of zero-token windows only leaves den = 0 when every stratum does; then
    // the statistic is NaN, which the percentile would hide: refuse instead.
    reps[r] = statistic(seed_count, window_count);
    KOFF_CHECK(!std::isnan(reps[r]), "bootstrap: replicate {} drew only windows without tokens", r);
  }
  const double tail = (1 - options.level) / 2;
  out.lower = percentile_linear(reps, tail);
  out.upper = percentile_linear(reps, 1 - tail);
  out.significant = ratio && (out.lower > 1 || out.upper < 1);
  if (options.keep_replicates) out.replicates = std::move(reps);
  return out;
}

}  // namespace

double percentile_linear(std::vector<double> values, double q) {
  KOFF_CHECK(!values.empty(), "percentile of no values");
  KOFF_CHECK(q >= 0 && q <= 1, "percentile: q must be in [0, 1], got {}", q);
  std::sort(values.begin(), values.end());
  const double h = static_cast<double>(values.size() - 1) * q;
  const size_t lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (h - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

BootstrapInterval bootstrap_perplexity(const SeedWindowNll& nll, std::span<const double> tokens,
                                       const BootstrapOptions& options, std::span<const int64_t> window_strata) {
  check_options(options);
  const int64_t windows = check_row(nll, "A", -1);
  const auto groups = group_windows(windows, tokens, window_strata);
  return bootstrap(nll, tokens, groups, options, /*ratio=*/false);
}

BootstrapInterval bootstrap_perplexity_ratio(const SeedWindowNll& a, const SeedWindowNll& b,
                                             std::span<const double> tokens, const BootstrapOptions& options,
                                             std::span<const int64_t> window_strata) {
  check_options(options);
  const int64_t windows = check_row(a, "A", -1);
  check_row(b, "B", windows);
  KOFF_CHECK(a.size() == b.size() || a.size() == 1 || b.size() == 1,
             "bootstrap: rows A and B have {} and {} seeds (equal, or one of them a single seed)", a.size(), b.size());
  const auto groups = group_windows(windows, tokens, window_strata);
  const size_t seeds = std::max(a.size(), b.size());
  std::vector<std::vector<double>> diff(seeds, std::vector<double>(windows));
  for (size_t s = 0; s < seeds; ++s) {
    const auto& ra = a[a.size() == 1 ? 0 : s];
    const auto& rb = b[b.size() == 1 ? 0 : s];
    for (int64_t w = 0; w < windows; ++w) diff[s][w] = ra[w] - rb[w];
  }
  return bootstrap(diff, tokens, groups, options, /*ratio=*/true);
}

double chi_square_1dof_survival(double x) {
  if (std::isnan(x)) return x;
  return x <= 0 ? 1.0 : std::erfc(std::sqrt(x / 2));
}

CmhResult cochran_mantel_haenszel(std::span<const RemovalTable> tables) {
  CmhResult out;
  out.strata = static_cast<int64_t>(tables.size());
  double or_num = 0, or_den = 0, delta = 0, variance = 0;
  double spec_removed = 0, spec_total = 0, other_removed = 0, other_total = 0;
  for (size_t k = 0; k < tables.size(); ++k) {
    const auto& t = tables[k];
    KOFF_CHECK(t.specific_removed >= 0 && t.specific_kept >= 0 && t.other_removed >= 0 && t.other_kept >= 0,
               "cochran_mantel_haenszel: stratum {} has a negative count", k);
    const double a = static_cast<double>(t.specific_removed), b = static_cast<double>(t.specific_kept);
    const double c = static_cast<double>(t.other_removed), d = static_cast<double>(t.other_kept);
    spec_removed += a, spec_total += a + b, other_removed += c, other_total += c + d;
    const double n = a + b + c + d;
    if (n < 2 || a + b == 0 || c + d == 0 || a + c == 0 || b + d == 0) continue;
    ++out.informative_strata;
    or_num += a * d / n;
    or_den += b * c / n;
    delta += a - (a + b) * (a + c) / n;
    variance += (a + b) * (c + d) * (a + c) * (b + d) / (n * n * (n - 1));
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  out.specific_removal_rate = spec_total > 0 ? spec_removed / spec_total : nan;
  out.other_removal_rate = other_total > 0 ? other_removed / other_total : nan;
  out.excess_removed = delta;
  if (or_den > 0) {
    out.odds_ratio = or_num / or_den;
    out.odds_ratio_finite = true;
  } else {
    out.odds_ratio = or_num > 0 ? std::numeric_limits<double>::infinity() : nan;
  }
  if (out.informative_strata == 0) {
    out.chi_square = out.p_value = out.chi_square_uncorrected = out.p_value_uncorrected = nan;
    return out;
  }
  // Every informative stratum has V_k > 0, so variance > 0 here.
  const double correction = std::abs(delta) >= 0.5 ? 0.5 : 0.0;
  out.chi_square = (std::abs(delta) - correction) * (std::abs(delta) - correction) / variance;
  out.chi_square_uncorrected = delta * delta / variance;
  out.p_value = chi_square_1dof_survival(out.chi_square);
  out.p_value_uncorrected = chi_square_1dof_survival(out.chi_square_uncorrected);
  return out;
}

}  // namespace koff::offload
