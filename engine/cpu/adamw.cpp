#include "engine/cpu/adamw.h"

#include <cmath>

#include "engine/cpu/common.h"

namespace koff::cpu {

template <typename T>
void adamw(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2, double eps,
           double weight_decay, int64_t step) {
  const double t = static_cast<double>(step);
  const T decay = static_cast<T>(1.0 - lr * weight_decay);
  const T b2 = static_cast<T>(beta2);
  const T one_b1 = static_cast<T>(1.0 - beta1), one_b2 = static_cast<T>(1.0 - beta2);
  const T step_size = static_cast<T>(lr / (1.0 - std::pow(beta1, t)));
  const T sqrt_bc2 = static_cast<T>(std::sqrt(1.0 - std::pow(beta2, t)));
  const T e = static_cast<T>(eps);
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin / 4)
  for (int64_t i = 0; i < n; ++i) {
    const T g = grad[i];
    T p = param[i] * decay;
    const T mi = m[i] + one_b1 * (g - m[i]);  // torch's lerp_(g, 1 - b1)
    const T vi = b2 * v[i] + one_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    p -= step_size * mi / (std::sqrt(vi) / sqrt_bc2 + e);
    param[i] = p;
  }
}

template void adamw<float>(float*, const float*, float*, float*, int64_t, double, double, double, double, double,
                           int64_t);
template void adamw<double>(double*, const double*, double*, double*, int64_t, double, double, double, double, double,
                            int64_t);

}  // namespace koff::cpu
