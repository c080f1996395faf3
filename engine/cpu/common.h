// Shared helpers of the CPU kernels: when a loop is worth an OpenMP team, and deterministic
// per-thread partial sums for reductions that collapse rows into a short vector.
#pragma once

#include <omp.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "engine/cpu/fast_math.h"

namespace koff::cpu {

// Below this many scalar operations a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;

inline int max_threads() { return omp_get_max_threads(); }

// 1 / (1 + exp(-x)); exp(-x) may overflow to inf for very negative x: the result is then 0, which is
// the correctly rounded answer. For float, exp is fast_math.h's exp_flush (<= 1.02 ulp; 0 for
// arguments below -87, where 1 + e^-87 rounds to 1 anyway), so that `omp simd` loops over SwiGLU, SiLU
// and the gates vectorise: std::exp stays a scalar call.
template <typename T>
KOFF_INLINE T sigmoid(T x) {
  if constexpr (std::is_same_v<T, float>)
    return 1.0f / (1.0f + exp_flush(-x));
  else
    return T(1) / (T(1) + std::exp(-x));
}

// out[c] = sum_r f(r, c) for r in [0, rows), c in [0, cols), accumulated in double. Rows are split
// statically over threads; each thread sums into its own row of `partials` and the rows are added in
// thread order, so the result is deterministic for a given thread count and needs no atomics.
template <typename T, typename RowFn>
void reduce_rows(int64_t rows, int64_t cols, T* out, RowFn&& add_row) {
  const int nt = (rows * cols >= kParallelMin) ? max_threads() : 1;
  std::vector<double> partials(static_cast<size_t>(nt) * static_cast<size_t>(cols), 0.0);
#pragma omp parallel num_threads(nt)
  {
    double* acc = partials.data() + static_cast<size_t>(omp_get_thread_num()) * static_cast<size_t>(cols);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) add_row(r, acc);
  }
  for (int64_t c = 0; c < cols; ++c) {
    double s = 0.0;
    for (int t = 0; t < nt; ++t) s += partials[static_cast<size_t>(t) * static_cast<size_t>(cols) + c];
    out[c] = static_cast<T>(s);
  }
}

}  // namespace koff::cpu
