// RMSNorm over the last dim (Llama / Qwen): x, y, dy, dx [rows, d]; w, dw [d]; rstd [rows].
//
//   r = 1 / sqrt(mean_i x_i^2 + eps),   y_i = x_i * r * w_i
//   dx_j = r * (w_j dy_j - x_j * r^2 * mean_i(dy_i w_i x_i))
//   dw_i = sum_rows dy_i * x_i * r
//
// The mean of squares is accumulated in double: it is the one long sum here and costs nothing extra.
// dw is reduced with per-thread partials (see reduce_rows) so rows can run in parallel without races.
#pragma once

#include <cstdint>

namespace koff::cpu {

template <typename T>
void rmsnorm(const T* x, const T* w, T eps, T* y, T* rstd, int64_t rows, int64_t d);
template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t rows, int64_t d);

}  // namespace koff::cpu
