#include "engine/cpu/rmsnorm.h"

#include <cmath>

#include "engine/cpu/common.h"

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

#define KOFF_INSTANTIATE(T)                                                  \
  template void rmsnorm<T>(const T*, const T*, T, T*, T*, int64_t, int64_t); \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t, int64_t);
KOFF_INSTANTIATE(float)
KOFF_INSTANTIATE(double)
#undef KOFF_INSTANTIATE

}  // namespace koff::cpu
