#include "engine/cpu/elementwise.h"

#include "engine/cpu/common.h"
#include "engine/tensor/error.h"

namespace koff::cpu {

template <typename T>
void binary(int kind, const T* a, const T* b, T* out, int64_t n) {
  switch (kind) {
    case 0:
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
      break;
    case 1:
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] - b[i];
      break;
    case 2:
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
      break;
    default:
      fail("binary: unknown kind {} (0 add, 1 sub, 2 mul)", kind);
  }
}

template <typename T>
void scale(const T* a, T s, T* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = s * a[i];
}

template <typename T>
void axpy(T* y, const T* x, T alpha, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <typename T>
void add_bias(const T* x, const T* bias, T* out, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* o = out + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) o[c] = xr[c] + bias[c];
  }
}

template <typename T>
void sum_to_last(const T* x, T* out, int64_t rows, int64_t cols) {
  reduce_rows(rows, cols, out, [&](int64_t r, double* acc) {
    const T* xr = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) acc[c] += xr[c];
  });
}

template <typename T>
T sum(const T* a, int64_t n) {
  double s = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : s) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) s += a[i];
  return static_cast<T>(s);
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  double s = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : s) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return static_cast<T>(s);
}

template <typename T>
void mul_groups(const T* x, const T* z, T* out, int64_t rows, int64_t groups, int64_t k) {
#pragma omp parallel for collapse(2) schedule(static) if (rows * groups * k >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = (r * groups + g) * k;
      const T zg = z[g];
#pragma omp simd
      for (int64_t j = 0; j < k; ++j) out[base + j] = x[base + j] * zg;
    }
  }
}

template <typename T>
void sum_groups_product(const T* dy, const T* x, T* dz, int64_t rows, int64_t groups, int64_t k) {
  reduce_rows(rows, groups, dz, [&](int64_t r, double* acc) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = (r * groups + g) * k;
      double s = 0.0;
      for (int64_t j = 0; j < k; ++j) s += static_cast<double>(dy[base + j]) * static_cast<double>(x[base + j]);
      acc[g] += s;
    }
  });
}

#define KOFF_INSTANTIATE(T)                                                       \
  template void binary<T>(int, const T*, const T*, T*, int64_t);                  \
  template void scale<T>(const T*, T, T*, int64_t);                               \
  template void axpy<T>(T*, const T*, T, int64_t);                                \
  template void add_bias<T>(const T*, const T*, T*, int64_t, int64_t);            \
  template void sum_to_last<T>(const T*, T*, int64_t, int64_t);                   \
  template T sum<T>(const T*, int64_t);                                           \
  template T dot<T>(const T*, const T*, int64_t);                                 \
  template void mul_groups<T>(const T*, const T*, T*, int64_t, int64_t, int64_t); \
  template void sum_groups_product<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);
KOFF_INSTANTIATE(float)
KOFF_INSTANTIATE(double)
#undef KOFF_INSTANTIATE

}  // namespace koff::cpu
