// One AdamW step in place over n parameters (Loshchilov & Hutter; PyTorch's torch.optim.AdamW order).
//
//   p -= lr * wd * p                                   decoupled decay, on the pre-update parameter
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//
// The m update and the last line (mhat / (sqrt(vhat) + eps)) are written the way PyTorch evaluates
// them (m as lerp, m + (1 - b1)(g - m)), so that f32 runs agree with PyTorch to rounding. t counts from 1; bias
// corrections are computed in double.
#pragma once

#include <cstdint>

namespace koff::cpu {

template <typename T>
void adamw(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
           double weight_decay, int64_t step);

}  // namespace koff::cpu
