// RMSNorm over the last dim (Llama / Qwen): x, y, dy, dx [rows, d]; w, dw [d]; rstd [rows].
//
//   r = 1 / sqrt(mean_i x_i^2 + eps),   y_i = x_i * r * w_i
//   dx_j = r * (w_j dy_j - x_j * r^2 * mean_i(dy_i w_i x_i))
//   dw_i = sum_rows dy_i * x_i * r
//
// The mean of squares is accumulated in double: it is the one long sum here and costs nothing extra.
// dw is reduced in fixed chunks of rows (common.h: reduce_rows): no races, the same bits on any thread count.

#include <cmath>

#include "engine/cpu/common.h"
#include "engine/cpu/cpu_backend.h"

namespace koff::cpu {

template <typename T>
void rmsnorm(const T* x, const T* w, T eps, T* y, T* rstd, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * static_cast<double>(xr[i]);
    const T rs = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(d) + static_cast<double>(eps)));
    rstd[r] = rs;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) yr[i] = xr[i] * rs * w[i];
  }
}

template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    const T* dyr = dy + r * d;
    T* dxr = dx + r * d;
    const T rs = rstd[r];
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < d; ++i) s += static_cast<double>(dyr[i]) * w[i] * xr[i];
    const T c = static_cast<T>(s / static_cast<double>(d)) * rs * rs;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) dxr[i] = rs * (w[i] * dyr[i] - xr[i] * c);
  }
  reduce_rows(rows, d, dw, [&](int64_t r, double* acc) {
    const T* xr = x + r * d;
    const T* dyr = dy + r * d;
    const T rs = rstd[r];
    for (int64_t i = 0; i < d; ++i) acc[i] += dyr[i] * xr[i] * rs;
  });
}

// ---- the CPU backend's entries (engine/tensor/backend.h) ----

void fill_norm(Backend& table) {
  table.rmsnorm = [](const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
    on_float(x, "rmsnorm", [&](auto tag) {
      using T = decltype(tag);
      cpu::rmsnorm<T>(ptr<T>(x), ptr<T>(w), static_cast<T>(eps), mut<T>(y), mut<T>(rstd), rows_of(x), w.numel());
    });
  };
  table.rmsnorm_backward = [](const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor& dx,
                              Tensor& dw) {
    on_float(x, "rmsnorm_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::rmsnorm_backward<T>(ptr<T>(dy), ptr<T>(x), ptr<T>(w), ptr<T>(rstd), mut<T>(dx), mut<T>(dw), rows_of(x),
                               w.numel());
    });
  };
}

}  // namespace koff::cpu
