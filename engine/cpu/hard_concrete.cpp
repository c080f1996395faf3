#include "engine/cpu/hard_concrete.h"

#include <algorithm>
#include <cmath>

#include "engine/ops/ops.h"
#include "engine/tensor/error.h"

namespace koff::cpu {

namespace {

using HC = ops::HardConcrete;

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// sigmoid of the reparameterised logistic sample.
template <typename T>
inline T sample_s(T la, T u) {
  const T uc = std::clamp(u, T(HC::eps), T(1 - HC::eps));
  return sigmoid((std::log(uc) - std::log1p(-uc) + la) / T(HC::beta));
}

}  // namespace

template <typename T>
void hard_concrete(int mode, const T* log_alpha, const T* u, T* out, int64_t n) {
  const T span = T(HC::zeta - HC::gamma), gamma = T(HC::gamma);
  const T shift = T(HC::beta * std::log(-HC::gamma / HC::zeta));
  switch (mode) {
    case 0:
      for (int64_t i = 0; i < n; ++i) out[i] = std::clamp(sample_s(log_alpha[i], u[i]) * span + gamma, T(0), T(1));
      break;
    case 1:
      for (int64_t i = 0; i < n; ++i) out[i] = std::clamp(sigmoid(log_alpha[i]) * span + gamma, T(0), T(1));
      break;
    case 2:
      for (int64_t i = 0; i < n; ++i) out[i] = sigmoid(log_alpha[i] - shift);
      break;
    default:
      fail("hard_concrete: unknown mode {} (0 sample, 1 deterministic, 2 p_open)", mode);
  }
}

template <typename T>
void hard_concrete_backward(int mode, const T* dout, const T* log_alpha, const T* u, T* dlog_alpha, int64_t n) {
  const T span = T(HC::zeta - HC::gamma), gamma = T(HC::gamma);
  const T shift = T(HC::beta * std::log(-HC::gamma / HC::zeta));
  switch (mode) {
    case 0:
      for (int64_t i = 0; i < n; ++i) {
        const T s = sample_s(log_alpha[i], u[i]), zbar = s * span + gamma;
        const bool inside = zbar >= T(0) && zbar <= T(1);
        dlog_alpha[i] = inside ? dout[i] * span * s * (T(1) - s) / T(HC::beta) : T(0);
      }
      break;
    case 1:
      for (int64_t i = 0; i < n; ++i) {
        const T s = sigmoid(log_alpha[i]), zbar = s * span + gamma;
        const bool inside = zbar >= T(0) && zbar <= T(1);
        dlog_alpha[i] = inside ? dout[i] * span * s * (T(1) - s) : T(0);
      }
      break;
    case 2:
      for (int64_t i = 0; i < n; ++i) {
        const T p = sigmoid(log_alpha[i] - shift);
        dlog_alpha[i] = dout[i] * p * (T(1) - p);
      }
      break;
    default:
      fail("hard_concrete_backward: unknown mode {} (0 sample, 1 deterministic, 2 p_open)", mode);
  }
}

template void hard_concrete<float>(int, const float*, const float*, float*, int64_t);
template void hard_concrete<double>(int, const double*, const double*, double*, int64_t);
template void hard_concrete_backward<float>(int, const float*, const float*, const float*, float*, int64_t);
template void hard_concrete_backward<double>(int, const double*, const double*, const double*, double*, int64_t);

}  // namespace koff::cpu
