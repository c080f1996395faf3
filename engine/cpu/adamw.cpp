// One AdamW step in place over n parameters (Loshchilov & Hutter; PyTorch's torch.optim.AdamW order).
//
//   p -= lr * wd * p                                   decoupled decay, on the pre-update parameter
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//
// The m update and the last line (mhat / (sqrt(vhat) + eps)) are written the way PyTorch evaluates
// them (m as lerp, m + (1 - b1)(g - m)), so that f32 runs agree with PyTorch to rounding. t counts from 1; bias
// corrections are computed in double.

#include <cmath>

#include "engine/cpu/common.h"
#include "engine/cpu/cpu_backend.h"

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

// ---- the CPU backend's entries (engine/tensor/backend.h) ----

void fill_adamw(Backend& table) {
  table.adamw = [](Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& config, int64_t step) {
    on_float(param, "adamw_step_", [&](auto tag) {
      using T = decltype(tag);
      cpu::adamw<T>(mut<T>(param), ptr<T>(grad), mut<T>(m), mut<T>(v), param.numel(), config.lr, config.beta1,
                    config.beta2, config.eps, config.weight_decay, step);
    });
  };
  // The many-tensor step is the same step per tensor (one profiled call, as on CUDA).
  table.adamw_multi = [](const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                         const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, const AdamWConfig& config,
                         int64_t step) {
    const Backend& cpu = cpu_backend();
    for (size_t i = 0; i < params.size(); ++i) cpu.adamw(*params[i], *grads[i], *m[i], *v[i], config, step);
  };
}

}  // namespace koff::cpu
