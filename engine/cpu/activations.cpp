#include "engine/cpu/activations.h"

#include <cmath>

#include "engine/cpu/common.h"

namespace koff::cpu {

namespace {
template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
}  // namespace

template <typename T>
void silu(const T* x, T* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin / 8)
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * sigmoid(x[i]);
}

template <typename T>
void silu_backward(const T* dy, const T* x, T* dx, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin / 8)
  for (int64_t i = 0; i < n; ++i) {
    const T s = sigmoid(x[i]);
    dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}

template <typename T>
void swiglu(const T* gate, const T* up, T* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin / 8)
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

template <typename T>
void swiglu_backward(const T* dy, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin / 8)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i], s = sigmoid(g);
    dup[i] = dy[i] * g * s;
    dgate[i] = dy[i] * up[i] * s * (T(1) + g * (T(1) - s));
  }
}

template <typename T>
void swiglu_gated(const T* gate, const T* up, const T* z, T* out, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin / 8)
  for (int64_t r = 0; r < rows; ++r) {
    const T *g = gate + r * cols, *u = up + r * cols;
    T* o = out + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) o[c] = g[c] * sigmoid(g[c]) * u[c] * z[c];
  }
}

namespace {
// One row of the gated SwiGLU backward; with kWantDz also adds dy silu(g) u into acc[c].
template <typename T, bool kWantDz>
inline void swiglu_gated_backward_row(const T* dy, const T* gate, const T* up, const T* z, T* dgate, T* dup,
                                      double* acc, int64_t cols) {
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) {
    const T g = gate[c], s = sigmoid(g), d = dy[c] * z[c];
    dup[c] = d * g * s;
    dgate[c] = d * up[c] * s * (T(1) + g * (T(1) - s));
    if constexpr (kWantDz) acc[c] += static_cast<double>(dy[c]) * static_cast<double>(g * s * up[c]);
  }
}
}  // namespace

template <typename T>
void swiglu_gated_backward(const T* dy, const T* gate, const T* up, const T* z, T* dgate, T* dup, T* dz, int64_t rows,
                           int64_t cols) {
  if (!dz) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin / 8)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = r * cols;
      swiglu_gated_backward_row<T, false>(dy + o, gate + o, up + o, z, dgate + o, dup + o, nullptr, cols);
    }
    return;
  }
  reduce_rows(rows, cols, dz, [&](int64_t r, double* acc) {
    const int64_t o = r * cols;
    swiglu_gated_backward_row<T, true>(dy + o, gate + o, up + o, z, dgate + o, dup + o, acc, cols);
  });
}

template <typename T>
void softmax(const T* x, T* out, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin / 8)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* o = out + r * cols;
    T mx = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) mx = xr[j] > mx ? xr[j] : mx;
    // A row of all -inf (fully masked) has no distribution; zeros keep NaN out of the graph.
    if (mx == -INFINITY) {
      for (int64_t j = 0; j < cols; ++j) o[j] = T(0);
      continue;
    }
    T s = T(0);
    for (int64_t j = 0; j < cols; ++j) {
      o[j] = std::exp(xr[j] - mx);
      s += o[j];
    }
    const T inv = T(1) / s;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) o[j] *= inv;
  }
}

template <typename T>
void softmax_backward(const T* dy, const T* y, T* dx, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* dyr = dy + r * cols;
    const T* yr = y + r * cols;
    T* d = dx + r * cols;
    T s = T(0);
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; ++j) s += dyr[j] * yr[j];
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) d[j] = yr[j] * (dyr[j] - s);
  }
}

#define KOFF_INSTANTIATE(T)                                                                                     \
  template void silu<T>(const T*, T*, int64_t);                                                                 \
  template void silu_backward<T>(const T*, const T*, T*, int64_t);                                              \
  template void swiglu<T>(const T*, const T*, T*, int64_t);                                                     \
  template void swiglu_backward<T>(const T*, const T*, const T*, T*, T*, int64_t);                              \
  template void swiglu_gated<T>(const T*, const T*, const T*, T*, int64_t, int64_t);                            \
  template void swiglu_gated_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t); \
  template void softmax<T>(const T*, T*, int64_t, int64_t);                                                     \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);
KOFF_INSTANTIATE(float)
KOFF_INSTANTIATE(double)
#undef KOFF_INSTANTIATE

}  // namespace koff::cpu
