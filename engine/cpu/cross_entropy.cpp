#include "engine/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/cpu/common.h"
#include "engine/cpu/fast_math.h"
#include "engine/cpu/gemm.h"
#include "engine/tensor/error.h"

namespace koff::cpu {

namespace {

template <typename I>
void check_targets(const I* targets, int64_t n, int64_t vocab, int64_t ignore_index, const char* op) {
  for (int64_t r = 0; r < n; ++r) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    KOFF_CHECK(t == ignore_index || (t >= 0 && t < vocab),
               "{}: target {} at row {} is out of range for {} classes (ignore_index is {})", op, t, r, vocab,
               ignore_index);
  }
}

// e^x: the vectorisable float version (<= 1.02 ulp, flushes below e^-87), exact std::exp for f64.
inline float exp_of(float x) { return exp_flush(x); }
inline double exp_of(double x) { return std::exp(x); }

template <typename T>
T row_lse(const T* x, int64_t v) {
  T mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < v; ++j) mx = x[j] > mx ? x[j] : mx;
  if (mx == -INFINITY || std::isinf(mx)) return mx;  // all -inf, or +inf present: lse is that infinity
  double s = 0.0;  // the exps are vectorised; the sum over a large vocabulary is kept in double
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < v; ++j) s += exp_of(x[j] - mx);
  return mx + static_cast<T>(std::log(s));
}

// Rows [0, n) of logits x (leading dim v): lse per row, plus the loss sum and count of counted rows.
template <typename T, typename I>
void lse_and_loss(const T* x, const I* targets, int64_t n, int64_t v, int64_t ignore_index, T* lse, double& loss,
                  int64_t& count) {
  double l = 0.0;
  int64_t c = 0;
#pragma omp parallel for schedule(static) reduction(+ : l, c) if (n * v >= kParallelMin / 8)
  for (int64_t r = 0; r < n; ++r) {
    const T* xr = x + r * v;
    lse[r] = row_lse(xr, v);
    const int64_t t = static_cast<int64_t>(targets[r]);
    if (t == ignore_index) continue;
    l += static_cast<double>(lse[r]) - static_cast<double>(xr[t]);
    ++c;
  }
  loss += l;
  count += c;
}

// In place: x[r, :] <- dloss * (softmax(x[r, :]) - onehot(target_r)), zero rows for ignored targets.
template <typename T, typename I>
void softmax_minus_onehot(T* x, const I* targets, const T* lse, int64_t n, int64_t v, int64_t ignore_index, T dloss) {
#pragma omp parallel for schedule(static) if (n * v >= kParallelMin / 8)
  for (int64_t r = 0; r < n; ++r) {
    T* xr = x + r * v;
    const int64_t t = static_cast<int64_t>(targets[r]);
    if (t == ignore_index) {
      std::fill_n(xr, v, T(0));
      continue;
    }
    const T l = lse[r];
    const T tiny = std::numeric_limits<T>::min();
#pragma omp simd
    for (int64_t j = 0; j < v; ++j) {
      // Flush subnormal results to zero: far-off tokens of a confident model give probabilities
      // below the smallest normal, and subnormal operands slow the dh/dw GEMMs down ~10x.
      const T g = dloss * exp_of(xr[j] - l);
      xr[j] = (g < tiny && g > -tiny) ? T(0) : g;
    }
    xr[t] -= dloss;
  }
}

}  // namespace

template <typename T, typename I>
int64_t cross_entropy(const T* logits, const I* targets, int64_t n, int64_t vocab, int64_t ignore_index, T* loss_sum,
                      T* lse) {
  check_targets(targets, n, vocab, ignore_index, "cross_entropy");
  double loss = 0.0;
  int64_t count = 0;
  lse_and_loss(logits, targets, n, vocab, ignore_index, lse, loss, count);
  *loss_sum = static_cast<T>(loss);
  return count;
}

template <typename T, typename I>
void cross_entropy_backward(T dloss, const T* logits, const I* targets, const T* lse, int64_t n, int64_t vocab,
                            int64_t ignore_index, T* dlogits) {
  check_targets(targets, n, vocab, ignore_index, "cross_entropy_backward");
  if (dlogits != logits) std::copy_n(logits, n * vocab, dlogits);
  softmax_minus_onehot(dlogits, targets, lse, n, vocab, ignore_index, dloss);
}

template <typename T, typename I>
int64_t linear_cross_entropy(const T* h, const T* w, const I* targets, int64_t n, int64_t vocab, int64_t d,
                             int64_t chunk, int64_t ignore_index, T* loss_sum, T* lse) {
  check_targets(targets, n, vocab, ignore_index, "linear_cross_entropy");
  const int64_t rows = std::max<int64_t>(1, std::min(chunk, n));
  std::vector<T> logits(static_cast<size_t>(rows * vocab));
  double loss = 0.0;
  int64_t count = 0;
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t cn = std::min(rows, n - r0);
    gemm(h + r0 * d, w, logits.data(), 1, cn, vocab, d, false, true, false);
    lse_and_loss(logits.data(), targets + r0, cn, vocab, ignore_index, lse + r0, loss, count);
  }
  *loss_sum = static_cast<T>(loss);
  return count;
}

template <typename T, typename I>
void linear_cross_entropy_backward(T dloss, const T* h, const T* w, const I* targets, const T* lse, int64_t n,
                                   int64_t vocab, int64_t d, int64_t chunk, int64_t ignore_index, T* dh, T* dw) {
  check_targets(targets, n, vocab, ignore_index, "linear_cross_entropy_backward");
  const int64_t rows = std::max<int64_t>(1, std::min(chunk, n));
  std::vector<T> g(static_cast<size_t>(rows * vocab));
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t cn = std::min(rows, n - r0);
    gemm(h + r0 * d, w, g.data(), 1, cn, vocab, d, false, true, false);
    softmax_minus_onehot(g.data(), targets + r0, lse + r0, cn, vocab, ignore_index, dloss);
    gemm(g.data(), w, dh + r0 * d, 1, cn, d, vocab, false, false, false);
    if (dw) gemm(g.data(), h + r0 * d, dw, 1, vocab, d, cn, true, false, false, T(1), T(1));
  }
}

#define KOFF_INSTANTIATE(T, I)                                                                                   \
  template int64_t cross_entropy<T, I>(const T*, const I*, int64_t, int64_t, int64_t, T*, T*);                   \
  template void cross_entropy_backward<T, I>(T, const T*, const I*, const T*, int64_t, int64_t, int64_t, T*);    \
  template int64_t linear_cross_entropy<T, I>(const T*, const T*, const I*, int64_t, int64_t, int64_t, int64_t,  \
                                              int64_t, T*, T*);                                                  \
  template void linear_cross_entropy_backward<T, I>(T, const T*, const T*, const I*, const T*, int64_t, int64_t, \
                                                    int64_t, int64_t, int64_t, T*, T*);
KOFF_INSTANTIATE(float, int32_t)
KOFF_INSTANTIATE(float, int64_t)
KOFF_INSTANTIATE(double, int32_t)
KOFF_INSTANTIATE(double, int64_t)
#undef KOFF_INSTANTIATE


template <typename T>
void kl_div(const T* logits, const T* teacher, int64_t n, int64_t vocab, T* loss_sum) {
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (n * vocab >= kParallelMin / 8)
  for (int64_t r = 0; r < n; ++r) {
    const T* x = logits + r * vocab;
    const T* t = teacher + r * vocab;
    const T lx = row_lse(x, vocab), lt = row_lse(t, vocab);
    double kl = 0.0;
    for (int64_t j = 0; j < vocab; ++j) {
      const double log_pt = static_cast<double>(t[j] - lt);
      kl += std::exp(log_pt) * (log_pt - static_cast<double>(x[j] - lx));
    }
    total += kl;
  }
  *loss_sum = static_cast<T>(total);
}

template <typename T>
void kl_div_backward(T dloss, const T* logits, const T* teacher, int64_t n, int64_t vocab, T* dlogits) {
#pragma omp parallel for schedule(static) if (n * vocab >= kParallelMin / 8)
  for (int64_t r = 0; r < n; ++r) {
    const T* x = logits + r * vocab;
    const T* t = teacher + r * vocab;
    T* g = dlogits + r * vocab;
    const T lx = row_lse(x, vocab), lt = row_lse(t, vocab);
#pragma omp simd
    for (int64_t j = 0; j < vocab; ++j) g[j] = dloss * (exp_of(x[j] - lx) - exp_of(t[j] - lt));
  }
}

template void kl_div<float>(const float*, const float*, int64_t, int64_t, float*);
template void kl_div<double>(const double*, const double*, int64_t, int64_t, double*);
template void kl_div_backward<float>(float, const float*, const float*, int64_t, int64_t, float*);
template void kl_div_backward<double>(double, const double*, const double*, int64_t, int64_t, double*);

}  // namespace koff::cpu
