// Hard-concrete gates (Louizos, Welling, Kingma 2018; KOFF_METHOD.md section 3), elementwise over n
// gates. Constants beta = 2/3, gamma = -0.1, zeta = 1.1, eps = 1e-6 (ops::HardConcrete).
//
//   mode 0 sample:         u' = clamp(u, eps, 1 - eps)
//                          s = sigmoid((log u' - log(1 - u') + la) / beta)
//                          z = clamp(s (zeta - gamma) + gamma, 0, 1)
//                          dz/dla = (zeta - gamma) s (1 - s) / beta
//   mode 1 deterministic:  s = sigmoid(la), z = clamp(s (zeta - gamma) + gamma, 0, 1)
//                          dz/dla = (zeta - gamma) s (1 - s)
//   mode 2 p_open:         p = sigmoid(la - beta log(-gamma / zeta)),  dp/dla = p (1 - p)
//
// The clamp passes the gradient where the stretched value s (zeta - gamma) + gamma lies in [0, 1]
// (bounds included, like torch.clamp's backward) and blocks it outside.
#pragma once

#include <cstdint>

namespace koff::cpu {

template <typename T>
void hard_concrete(int mode, const T* log_alpha, const T* u, T* out, int64_t n);
template <typename T>
void hard_concrete_backward(int mode, const T* dout, const T* log_alpha, const T* u, T* dlog_alpha, int64_t n);

}  // namespace koff::cpu
