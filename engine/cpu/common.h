// Shared helpers of the CPU kernels: when a loop is worth an OpenMP team, and reductions whose result
// does not depend on the number of threads.
#pragma once

#include <omp.h>

#include <algorithm>
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

// Reductions give the same bits on any number of threads (engine/cpu/threads.h changes the count while
// a run goes on; a resumed run must match an uninterrupted one): [0, n) is cut into a fixed number of
// chunks, kReduceChunks or n when smaller, each reduced in index order (on whichever thread), and the
// chunks' results are added in chunk order. 32 chunks keep up to 32 threads busy.
constexpr int64_t kReduceChunks = 32;
inline int64_t reduce_chunks(int64_t n) { return std::clamp<int64_t>(n, 1, kReduceChunks); }

// sum over chunks of chunk(begin, end), an Acc with +=; chunks in parallel when `parallel`.
template <typename Acc, typename ChunkFn>
Acc sum_chunks(int64_t n, bool parallel, ChunkFn&& chunk) {
  if (n <= 0) return Acc{};
  const int64_t chunks = reduce_chunks(n);
  Acc part[kReduceChunks] = {};
#pragma omp parallel for schedule(static) if (parallel && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) part[c] = chunk(n * c / chunks, n * (c + 1) / chunks);
  Acc total = part[0];
  for (int64_t c = 1; c < chunks; ++c) total += part[c];
  return total;
}

// out[c] = sum_r f(r, c) for r in [0, rows), c in [0, cols), accumulated in double: each chunk of rows
// sums into its own row of partials (add_row(r, acc) adds row r's terms into acc[0, cols)), and the
// partial rows are added in chunk order. No atomics; the same bits on any number of threads.
template <typename T, typename RowFn>
void reduce_rows(int64_t rows, int64_t cols, T* out, RowFn&& add_row) {
  const int64_t chunks = reduce_chunks(rows);
  std::vector<double> partials(static_cast<size_t>(chunks) * static_cast<size_t>(cols), 0.0);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    double* acc = partials.data() + static_cast<size_t>(c) * static_cast<size_t>(cols);
    for (int64_t r = rows * c / chunks; r < rows * (c + 1) / chunks; ++r) add_row(r, acc);
  }
  double* total = partials.data();
  for (int64_t c = 1; c < chunks; ++c) {
    const double* p = partials.data() + static_cast<size_t>(c) * static_cast<size_t>(cols);
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) total[j] += p[j];
  }
  for (int64_t j = 0; j < cols; ++j) out[j] = static_cast<T>(total[j]);
}

}  // namespace koff::cpu
