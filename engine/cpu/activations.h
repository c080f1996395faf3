// Activations over contiguous arrays of length n (softmax: [rows, cols], over the last dim).
//
//   sigmoid(x) = 1 / (1 + exp(-x))       (exp(-x) may overflow to inf for very negative x: the result
//                                         is then 0, which is the correctly rounded answer)
//   silu(x) = x sigmoid(x);              silu'(x) = s (1 + x (1 - s)),  s = sigmoid(x)
//   swiglu(g, u) = silu(g) u;            dg = dy u silu'(g),  du = dy silu(g)
//   swiglu_gated(g, u, z) = silu(g) u z[f] over [rows, F] (SwiGLU times the per-neuron gate):
//                                        dg = (dy z) u silu'(g),  du = (dy z) silu(g),
//                                        dz[f] = sum_r dy silu(g) u  (double accumulation, the
//                                        operation order of swiglu then mul_groups/sum_groups_product)
//   softmax(x)_j = exp(x_j - max x) / sum_k exp(x_k - max x)
//   softmax backward: dx_j = y_j (dy_j - sum_k dy_k y_k)
#pragma once

#include <cstdint>

namespace koff::cpu {

template <typename T>
void silu(const T* x, T* out, int64_t n);
template <typename T>
void silu_backward(const T* dy, const T* x, T* dx, int64_t n);
template <typename T>
void swiglu(const T* gate, const T* up, T* out, int64_t n);
template <typename T>
void swiglu_backward(const T* dy, const T* gate, const T* up, T* dgate, T* dup, int64_t n);
template <typename T>
void swiglu_gated(const T* gate, const T* up, const T* z, T* out, int64_t rows, int64_t cols);
// dz may be null: the gate's gradient is then not computed.
template <typename T>
void swiglu_gated_backward(const T* dy, const T* gate, const T* up, const T* z, T* dgate, T* dup, T* dz, int64_t rows,
                           int64_t cols);
template <typename T>
void softmax(const T* x, T* out, int64_t rows, int64_t cols);
template <typename T>
void softmax_backward(const T* dy, const T* y, T* dx, int64_t rows, int64_t cols);

}  // namespace koff::cpu
