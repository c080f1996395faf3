// Elementwise kernels and the small reductions that go with them. All arrays contiguous, length n
// unless stated. Reductions accumulate in double (sums over a whole activation tensor are long).
//
//   binary:              out[i] = a[i] (+|-|*) b[i]                     kind 0 add, 1 sub, 2 mul
//   scale:               out[i] = s * a[i]
//   axpy:                y[i] += alpha * x[i]
//   add_bias:            out[r, c] = x[r, c] + bias[c]                 x [rows, cols]
//   sum_to_last:         out[c] = sum_r x[r, c]                         x [rows, cols]
//   sum / dot:           out = sum_i a[i] (* b[i])                      one scalar
//   mul_groups:          out[r, g, j] = x[r, g, j] * z[g]               x [rows, G, K]
//   sum_groups_product:  dz[g] = sum_{r, j} dy[r, g, j] * x[r, g, j]    dy, x [rows, G, K]
#pragma once

#include <cstdint>

namespace koff::cpu {

template <typename T>
void binary(int kind, const T* a, const T* b, T* out, int64_t n);
template <typename T>
void scale(const T* a, T s, T* out, int64_t n);
template <typename T>
void axpy(T* y, const T* x, T alpha, int64_t n);
template <typename T>
void add_bias(const T* x, const T* bias, T* out, int64_t rows, int64_t cols);
template <typename T>
void sum_to_last(const T* x, T* out, int64_t rows, int64_t cols);
template <typename T>
T sum(const T* a, int64_t n);
template <typename T>
T dot(const T* a, const T* b, int64_t n);
template <typename T>
void mul_groups(const T* x, const T* z, T* out, int64_t rows, int64_t groups, int64_t k);
template <typename T>
void sum_groups_product(const T* dy, const T* x, T* dz, int64_t rows, int64_t groups, int64_t k);

}  // namespace koff::cpu
