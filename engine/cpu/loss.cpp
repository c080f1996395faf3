// Cross-entropy over logits rows, plain and fused with the lm_head GEMM.
//
// logits, dlogits [N, V]; targets [N] (int32/int64); lse [N]; h, dh [N, d]; w, dw [V, d].
// A target equal to ignore_index counts for nothing (zero loss, zero gradient row); any other target
// outside [0, V) is a koff::Error, checked before any work.
//
//   lse_r = m_r + log sum_j exp(x_rj - m_r),  m_r = max_j x_rj     (lse is written for every row)
//   loss_sum = sum over counted rows of (lse_r - x_r,target_r)      (double accumulation)
//   dlogits_rj = dloss * (exp(x_rj - lse_r) - [j == target_r])
//
// The fused form never holds [N, V]: rows go `chunk` at a time through one [chunk, V] scratch buffer,
// logits_chunk = h_chunk W^T (GEMM). Its backward recomputes that chunk, turns it into
// G = dlogits_chunk in place, then dh_chunk = G W and, when dw is given, dw += G^T h_chunk. That is
// 1 GEMM per chunk forward and 2 (3 with dw) backward, each 2 * rows * V * d flops. When the forward is
// given dh (a frozen W: the backward would need no dw), it forms each chunk's dlogits at once from
// e_j = exp(x_j - m) kept in place, as dloss e_j / sum e (one exp per logit), and runs dh_chunk = G W
// there: 2 GEMMs in all per chunk.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/cpu/common.h"
#include "engine/cpu/cpu_backend.h"
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
KOFF_INLINE float exp_of(float x) { return exp_flush(x); }
inline double exp_of(double x) { return std::exp(x); }

// sum_j e^(x_j - mx), optionally storing each e^(x_j - mx) in out (which may be x). The exps are
// vectorised and summed in T within blocks of 256, the block sums in double: the sum over a large
// vocabulary keeps double's accuracy without a float -> double conversion per element.
template <typename T, bool kStore>
KOFF_INLINE double sum_exp(const T* x, T mx, int64_t v, T* out) {
  double s = 0.0;
  for (int64_t j0 = 0; j0 < v; j0 += 256) {
    const int64_t je = std::min(v, j0 + 256);
    T bs = T(0);
#pragma omp simd reduction(+ : bs)
    for (int64_t j = j0; j < je; ++j) {
      const T e = exp_of(x[j] - mx);
      if constexpr (kStore) out[j] = e;
      bs += e;
    }
    s += static_cast<double>(bs);
  }
  return s;
}

template <typename T>
KOFF_INLINE T row_max(const T* x, int64_t v) {
  T mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < v; ++j) mx = x[j] > mx ? x[j] : mx;
  return mx;
}

template <typename T>
KOFF_INLINE T row_lse(const T* x, int64_t v) {
  const T mx = row_max(x, v);
  if (mx == -INFINITY || std::isinf(mx)) return mx;  // all -inf, or +inf present: lse is that infinity
  return mx + static_cast<T>(std::log(sum_exp<T, false>(x, mx, v, nullptr)));
}

// One row in place: x <- dloss * (exp(x - l) - onehot(t)), l its lse.
template <typename T>
KOFF_INLINE void row_softmax_minus_onehot(T* xr, int64_t t, T l, int64_t v, T dloss) {
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

// One row of the fused forward that also wants dlogits, in place (t < 0: an ignored row, zeroed):
// e_j = exp(x_j - m) computed once, kept in x and scaled by dloss / sum_j e_j (the same softmax; one exp
// per logit instead of two). A row with an infinite max goes the two-pass way. Returns lse; *xt gets
// the target's logit (read before it is overwritten).
template <typename T>
KOFF_INLINE T row_lse_and_dlogits(T* xr, int64_t t, int64_t v, T dloss, T* xt) {
  const T mx = row_max(xr, v);
  *xt = t < 0 ? T(0) : xr[t];
  if (mx == -INFINITY || std::isinf(mx)) {
    if (t < 0)
      std::fill_n(xr, v, T(0));
    else
      row_softmax_minus_onehot(xr, t, mx, v, dloss);
    return mx;
  }
  const double s = sum_exp<T, true>(xr, mx, v, xr);
  const T lse = mx + static_cast<T>(std::log(s));
  if (t < 0) {
    std::fill_n(xr, v, T(0));
    return lse;
  }
  const T scale = static_cast<T>(static_cast<double>(dloss) / s), tiny = std::numeric_limits<T>::min();
#pragma omp simd
  for (int64_t j = 0; j < v; ++j) {
    const T g = xr[j] * scale;
    xr[j] = (g < tiny && g > -tiny) ? T(0) : g;  // no subnormals into the dh GEMM (see above)
  }
  xr[t] -= dloss;
  return lse;
}

// The row steps as called from the OpenMP loops: the float ones built per ISA level
// (KOFF_SIMD_CLONES, fast_math.h: AVX-512 runs the exps 16 lanes wide instead of SSE2's 4).
KOFF_SIMD_CLONES float lse_row(const float* x, int64_t v) { return row_lse(x, v); }
double lse_row(const double* x, int64_t v) { return row_lse(x, v); }
KOFF_SIMD_CLONES void softmax_onehot_row(float* x, int64_t t, float l, int64_t v, float dloss) {
  row_softmax_minus_onehot(x, t, l, v, dloss);
}
void softmax_onehot_row(double* x, int64_t t, double l, int64_t v, double dloss) {
  row_softmax_minus_onehot(x, t, l, v, dloss);
}
KOFF_SIMD_CLONES float lse_dlogits_row(float* x, int64_t t, int64_t v, float dloss, float* xt) {
  return row_lse_and_dlogits(x, t, v, dloss, xt);
}
double lse_dlogits_row(double* x, int64_t t, int64_t v, double dloss, double* xt) {
  return row_lse_and_dlogits(x, t, v, dloss, xt);
}

// A loss sum and the count of the rows in it, summed over rows in chunks (common.h: sum_chunks).
struct LossSum {
  double loss = 0;
  int64_t count = 0;
  LossSum& operator+=(const LossSum& o) {
    loss += o.loss, count += o.count;
    return *this;
  }
};

// Rows [0, n) of logits x (leading dim v): lse per row, plus the loss sum and count of counted rows.
template <typename T, typename I>
void lse_and_loss(const T* x, const I* targets, int64_t n, int64_t v, int64_t ignore_index, T* lse, double& loss,
                  int64_t& count) {
  const LossSum s = sum_chunks<LossSum>(n, n * v >= kParallelMin / 8, [&](int64_t begin, int64_t end) {
    LossSum a;
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * v;
      lse[r] = lse_row(xr, v);
      const int64_t t = static_cast<int64_t>(targets[r]);
      if (t == ignore_index) continue;
      a.loss += static_cast<double>(lse[r]) - static_cast<double>(xr[t]);
      ++a.count;
    }
    return a;
  });
  loss += s.loss;
  count += s.count;
}

// In place: x[r, :] <- dloss * (softmax(x[r, :]) - onehot(target_r)), zero rows for ignored targets.
template <typename T, typename I>
void softmax_minus_onehot(T* x, const I* targets, const T* lse, int64_t n, int64_t v, int64_t ignore_index, T dloss) {
#pragma omp parallel for schedule(static) if (n * v >= kParallelMin / 8)
  for (int64_t r = 0; r < n; ++r) {
    T* xr = x + r * v;
    const int64_t t = static_cast<int64_t>(targets[r]);
    if (t == ignore_index)
      std::fill_n(xr, v, T(0));
    else
      softmax_onehot_row(xr, t, lse[r], v, dloss);
  }
}

// lse_and_loss and softmax_minus_onehot in one pass over each row (row_lse_and_dlogits).
template <typename T, typename I>
void lse_loss_and_dlogits(T* x, const I* targets, int64_t n, int64_t v, int64_t ignore_index, T* lse, double& loss,
                          int64_t& count, T dloss) {
  const LossSum s = sum_chunks<LossSum>(n, n * v >= kParallelMin / 8, [&](int64_t begin, int64_t end) {
    LossSum a;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = static_cast<int64_t>(targets[r]);
      const bool ignored = t == ignore_index;
      T xt;
      lse[r] = lse_dlogits_row(x + r * v, ignored ? -1 : t, v, dloss, &xt);
      if (ignored) continue;
      a.loss += static_cast<double>(lse[r]) - static_cast<double>(xt);
      ++a.count;
    }
    return a;
  });
  loss += s.loss;
  count += s.count;
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
                             int64_t chunk, int64_t ignore_index, T* loss_sum, T* lse, T dloss, T* dh) {
  check_targets(targets, n, vocab, ignore_index, "linear_cross_entropy");
  const int64_t rows = std::max<int64_t>(1, std::min(chunk, n));
  std::vector<T> logits(static_cast<size_t>(rows * vocab));
  double loss = 0.0;
  int64_t count = 0;
  for (int64_t r0 = 0; r0 < n; r0 += rows) {
    const int64_t cn = std::min(rows, n - r0);
    gemm(h + r0 * d, w, logits.data(), 1, cn, vocab, d, false, true, false);
    if (dh) {  // the chunk's gradient now, while its logits are here
      lse_loss_and_dlogits(logits.data(), targets + r0, cn, vocab, ignore_index, lse + r0, loss, count, dloss);
      gemm(logits.data(), w, dh + r0 * d, 1, cn, d, vocab, false, false, false);
    } else {
      lse_and_loss(logits.data(), targets + r0, cn, vocab, ignore_index, lse + r0, loss, count);
    }
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
                                              int64_t, T*, T*, T, T*);                                           \
  template void linear_cross_entropy_backward<T, I>(T, const T*, const T*, const I*, const T*, int64_t, int64_t, \
                                                    int64_t, int64_t, int64_t, T*, T*);
KOFF_INSTANTIATE(float, int32_t)
KOFF_INSTANTIATE(float, int64_t)
KOFF_INSTANTIATE(double, int32_t)
KOFF_INSTANTIATE(double, int64_t)
#undef KOFF_INSTANTIATE

template <typename T>
void kl_div(const T* logits, const T* teacher, int64_t n, int64_t vocab, T* loss_sum) {
  const double total = sum_chunks<double>(n, n * vocab >= kParallelMin / 8, [&](int64_t begin, int64_t end) {
    double rows_kl = 0.0;
    for (int64_t r = begin; r < end; ++r) {
      const T* x = logits + r * vocab;
      const T* t = teacher + r * vocab;
      const T lx = row_lse(x, vocab), lt = row_lse(t, vocab);
      double kl = 0.0;
      for (int64_t j = 0; j < vocab; ++j) {
        const double log_pt = static_cast<double>(t[j] - lt);
        kl += std::exp(log_pt) * (log_pt - static_cast<double>(x[j] - lx));
      }
      rows_kl += kl;
    }
    return rows_kl;
  });
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

// ---- the CPU backend's entries (engine/tensor/backend.h) ----

void fill_loss(Backend& table) {
  table.cross_entropy = [](const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss_sum,
                           Tensor& lse) {
    int64_t count = 0;
    on_float(logits, "cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      on_index(targets, "cross_entropy", [&](auto itag) {
        using I = decltype(itag);
        count = cpu::cross_entropy<T, I>(ptr<T>(logits), ptr<I>(targets), logits.size(0), logits.size(1), ignore_index,
                                         mut<T>(loss_sum), mut<T>(lse));
      });
    });
    return count;
  };
  table.cross_entropy_backward = [](double dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                    int64_t ignore_index, Tensor& dlogits) {
    on_float(logits, "cross_entropy_backward", [&](auto tag) {
      using T = decltype(tag);
      on_index(targets, "cross_entropy_backward", [&](auto itag) {
        using I = decltype(itag);
        cpu::cross_entropy_backward<T, I>(static_cast<T>(dloss), ptr<T>(logits), ptr<I>(targets), ptr<T>(lse),
                                          logits.size(0), logits.size(1), ignore_index, mut<T>(dlogits));
      });
    });
  };
  table.kl_div = [](const Tensor& logits, const Tensor& teacher, Tensor& loss_sum) {
    on_float(logits, "kl_div", [&](auto tag) {
      using T = decltype(tag);
      cpu::kl_div<T>(ptr<T>(logits), ptr<T>(teacher), logits.size(0), logits.size(1), mut<T>(loss_sum));
    });
  };
  table.kl_div_backward = [](double dloss, const Tensor& logits, const Tensor& teacher, Tensor& dlogits) {
    on_float(logits, "kl_div_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::kl_div_backward<T>(static_cast<T>(dloss), ptr<T>(logits), ptr<T>(teacher), logits.size(0), logits.size(1),
                              mut<T>(dlogits));
    });
  };
  table.linear_cross_entropy = [](const Tensor& h, const Tensor& w, const Tensor& targets, int64_t chunk,
                                  int64_t ignore_index, Tensor& loss_sum, Tensor& lse, double dloss, Tensor& dh) {
    int64_t count = 0;
    on_float(h, "linear_cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      on_index(targets, "linear_cross_entropy", [&](auto itag) {
        using I = decltype(itag);
        count = cpu::linear_cross_entropy<T, I>(ptr<T>(h), ptr<T>(w), ptr<I>(targets), h.size(0), w.size(0), h.size(1),
                                                chunk, ignore_index, mut<T>(loss_sum), mut<T>(lse),
                                                static_cast<T>(dloss), dh.defined() ? mut<T>(dh) : nullptr);
      });
    });
    return count;
  };
  table.linear_cross_entropy_backward = [](double dloss, const Tensor& h, const Tensor& w, const Tensor& targets,
                                           const Tensor& lse, int64_t chunk, int64_t ignore_index, Tensor& dh,
                                           Tensor& dw) {
    on_float(h, "linear_cross_entropy_backward", [&](auto tag) {
      using T = decltype(tag);
      on_index(targets, "linear_cross_entropy_backward", [&](auto itag) {
        using I = decltype(itag);
        cpu::linear_cross_entropy_backward<T, I>(static_cast<T>(dloss), ptr<T>(h), ptr<T>(w), ptr<I>(targets),
                                                 ptr<T>(lse), h.size(0), w.size(0), h.size(1), chunk, ignore_index,
                                                 mut<T>(dh), mut<T>(dw));
      });
    });
  };
}

}  // namespace koff::cpu
