// Gate kernels (KOFF_METHOD.md section 3): the head and neuron gates applied to activations, their
// reductions, and the hard-concrete distribution the gates are drawn from.
//
//   mul_groups:          out[r, g, j] = x[r, g, j] * z[g]               x [rows, G, K]
//   sum_groups_product:  dz[g] = sum_{r, j} dy[r, g, j] * x[r, g, j]    dy, x [rows, G, K]
//   swiglu_gated(g, u, z) = silu(g) u z[f] over [rows, F] (SwiGLU times the per-neuron gate):
//                        dg = (dy z) u silu'(g),  du = (dy z) silu(g),
//                        dz[f] = sum_r dy silu(g) u  (double accumulation, the operation order of
//                        swiglu then mul_groups/sum_groups_product)
//
// Hard-concrete gates (Louizos, Welling, Kingma 2018; KOFF_METHOD.md section 3), elementwise over n
// gates. Constants beta = 2/3, gamma = -0.1, zeta = 1.1, eps = 1e-6 (engine/tensor/backend.h).
//
//   sample:         u' = clamp(u, eps, 1 - eps)
//                   s = sigmoid((log u' - log(1 - u') + la) / beta)
//                   z = clamp(s (zeta - gamma) + gamma, 0, 1)
//                   dz/dla = (zeta - gamma) s (1 - s) / beta
//   deterministic:  s = sigmoid(la), z = clamp(s (zeta - gamma) + gamma, 0, 1)   (no gradient: the
//                   deterministic gate is read at evaluation and export, never trained through)
//   p_open:         p = sigmoid(la - beta log(-gamma / zeta)),  dp/dla = p (1 - p)
//
// The clamp passes the gradient where the stretched value s (zeta - gamma) + gamma lies in [0, 1]
// (bounds included, like torch.clamp's backward) and blocks it outside.

#include <algorithm>
#include <cmath>

#include "engine/cpu/common.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/tensor/error.h"

namespace koff::cpu {

template <typename T>
void mul_groups(const T* x, const T* z, T* out, int64_t rows, int64_t groups, int64_t k) {
#pragma omp parallel for collapse(2) schedule(static) if (rows * groups * k >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = (r * groups + g) * k;
      const T zg = z[g];
#pragma omp simd
      for (int64_t j = 0; j < k; ++j) out[base + j] = x[base + j] * zg;
    }
  }
}

template <typename T>
void sum_groups_product(const T* dy, const T* x, T* dz, int64_t rows, int64_t groups, int64_t k) {
  reduce_rows(rows, groups, dz, [&](int64_t r, double* acc) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t base = (r * groups + g) * k;
      double s = 0.0;
      for (int64_t j = 0; j < k; ++j) s += static_cast<double>(dy[base + j]) * static_cast<double>(x[base + j]);
      acc[g] += s;
    }
  });
}

namespace {
template <typename T>
KOFF_INLINE void swiglu_gated_row_impl(const T* g, const T* u, const T* z, T* o, int64_t cols) {
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) o[c] = g[c] * sigmoid(g[c]) * u[c] * z[c];
}

// One row of the gated SwiGLU backward; with kWantDz also adds dy silu(g) u into acc[c].
template <typename T, bool kWantDz>
KOFF_INLINE void swiglu_gated_backward_row_impl(const T* dy, const T* gate, const T* up, const T* z, T* dgate, T* dup,
                                                double* acc, int64_t cols) {
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) {
    const T g = gate[c], s = sigmoid(g), d = dy[c] * z[c];
    dup[c] = d * g * s;
    dgate[c] = d * up[c] * s * (T(1) + g * (T(1) - s));
    if constexpr (kWantDz) acc[c] += static_cast<double>(dy[c]) * static_cast<double>(g * s * up[c]);
  }
}

// The rows as the OpenMP loops call them, the float ones built per ISA level (KOFF_SIMD_CLONES in
// fast_math.h: the sigmoid's exp 16 lanes wide on AVX-512 instead of SSE2's 4).
KOFF_SIMD_CLONES void swiglu_gated_row(const float* g, const float* u, const float* z, float* o, int64_t cols) {
  swiglu_gated_row_impl(g, u, z, o, cols);
}
void swiglu_gated_row(const double* g, const double* u, const double* z, double* o, int64_t cols) {
  swiglu_gated_row_impl(g, u, z, o, cols);
}
KOFF_SIMD_CLONES void swiglu_gated_backward_row(const float* dy, const float* gate, const float* up, const float* z,
                                                float* dgate, float* dup, double* acc, int64_t cols) {
  if (acc)
    swiglu_gated_backward_row_impl<float, true>(dy, gate, up, z, dgate, dup, acc, cols);
  else
    swiglu_gated_backward_row_impl<float, false>(dy, gate, up, z, dgate, dup, acc, cols);
}
void swiglu_gated_backward_row(const double* dy, const double* gate, const double* up, const double* z, double* dgate,
                               double* dup, double* acc, int64_t cols) {
  if (acc)
    swiglu_gated_backward_row_impl<double, true>(dy, gate, up, z, dgate, dup, acc, cols);
  else
    swiglu_gated_backward_row_impl<double, false>(dy, gate, up, z, dgate, dup, acc, cols);
}
}  // namespace

template <typename T>
void swiglu_gated(const T* gate, const T* up, const T* z, T* out, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin / 8)
  for (int64_t r = 0; r < rows; ++r) swiglu_gated_row(gate + r * cols, up + r * cols, z, out + r * cols, cols);
}

template <typename T>
void swiglu_gated_backward(const T* dy, const T* gate, const T* up, const T* z, T* dgate, T* dup, T* dz, int64_t rows,
                           int64_t cols) {
  if (!dz) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin / 8)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = r * cols;
      swiglu_gated_backward_row(dy + o, gate + o, up + o, z, dgate + o, dup + o, nullptr, cols);
    }
    return;
  }
  reduce_rows(rows, cols, dz, [&](int64_t r, double* acc) {
    const int64_t o = r * cols;
    swiglu_gated_backward_row(dy + o, gate + o, up + o, z, dgate + o, dup + o, acc, cols);
  });
}

namespace {

using HC = HardConcrete;

// sigmoid of the reparameterised logistic sample.
template <typename T>
inline T sample_s(T la, T u) {
  const T uc = std::clamp(u, T(HC::eps), T(1 - HC::eps));
  return sigmoid((std::log(uc) - std::log1p(-uc) + la) / T(HC::beta));
}

}  // namespace

template <typename T>
void hard_concrete(GateFn fn, const T* log_alpha, const T* u, T* out, int64_t n) {
  const T span = T(HC::zeta - HC::gamma), gamma = T(HC::gamma);
  const T shift = T(HC::beta * std::log(-HC::gamma / HC::zeta));
  switch (fn) {
    case GateFn::sample:
      for (int64_t i = 0; i < n; ++i) out[i] = std::clamp(sample_s(log_alpha[i], u[i]) * span + gamma, T(0), T(1));
      break;
    case GateFn::deterministic:
      for (int64_t i = 0; i < n; ++i) out[i] = std::clamp(sigmoid(log_alpha[i]) * span + gamma, T(0), T(1));
      break;
    case GateFn::p_open:
      for (int64_t i = 0; i < n; ++i) out[i] = sigmoid(log_alpha[i] - shift);
      break;
  }
}

template <typename T>
void hard_concrete_backward(GateFn fn, const T* dout, const T* log_alpha, const T* u, T* dlog_alpha, int64_t n) {
  const T span = T(HC::zeta - HC::gamma), gamma = T(HC::gamma);
  const T shift = T(HC::beta * std::log(-HC::gamma / HC::zeta));
  switch (fn) {
    case GateFn::sample:
      for (int64_t i = 0; i < n; ++i) {
        const T s = sample_s(log_alpha[i], u[i]), zbar = s * span + gamma;
        const bool inside = zbar >= T(0) && zbar <= T(1);
        dlog_alpha[i] = inside ? dout[i] * span * s * (T(1) - s) / T(HC::beta) : T(0);
      }
      break;
    case GateFn::p_open:
      for (int64_t i = 0; i < n; ++i) {
        const T p = sigmoid(log_alpha[i] - shift);
        dlog_alpha[i] = dout[i] * p * (T(1) - p);
      }
      break;
    case GateFn::deterministic:
      fail("hard_concrete_backward: the deterministic gate has no backward (it is never trained through)");
  }
}

// ---- the CPU backend's entries (engine/tensor/backend.h) ----

void fill_gates(Backend& table) {
  table.mul_groups = [](const Tensor& x, const Tensor& z, int64_t rows, int64_t groups, int64_t k, Tensor& out) {
    on_float(x, "mul_groups", [&](auto tag) {
      using T = decltype(tag);
      cpu::mul_groups<T>(ptr<T>(x), ptr<T>(z), mut<T>(out), rows, groups, k);
    });
  };
  table.sum_groups_product = [](const Tensor& dy, const Tensor& x, int64_t rows, int64_t groups, int64_t k,
                                Tensor& dz) {
    on_float(x, "sum_groups_product", [&](auto tag) {
      using T = decltype(tag);
      cpu::sum_groups_product<T>(ptr<T>(dy), ptr<T>(x), mut<T>(dz), rows, groups, k);
    });
  };
  table.swiglu_gated = [](const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& out) {
    on_float(gate, "swiglu_gated", [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu_gated<T>(ptr<T>(gate), ptr<T>(up), ptr<T>(z), mut<T>(out), rows_of(gate), z.numel());
    });
  };
  table.swiglu_gated_backward = [](const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z,
                                   Tensor& dgate, Tensor& dup, Tensor& dz) {
    on_float(gate, "swiglu_gated_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu_gated_backward<T>(ptr<T>(dy), ptr<T>(gate), ptr<T>(up), ptr<T>(z), mut<T>(dgate), mut<T>(dup),
                                    mut<T>(dz), rows_of(gate), z.numel());
    });
  };
  table.hard_concrete = [](GateFn fn, const Tensor& log_alpha, const Tensor& u, Tensor& out) {
    on_float(log_alpha, "hard_concrete", [&](auto tag) {
      using T = decltype(tag);
      cpu::hard_concrete<T>(fn, ptr<T>(log_alpha), ptr<T>(u), mut<T>(out), log_alpha.numel());
    });
  };
  table.hard_concrete_backward = [](GateFn fn, const Tensor& dout, const Tensor& log_alpha, const Tensor& u,
                                    Tensor& dlog_alpha) {
    on_float(log_alpha, "hard_concrete_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::hard_concrete_backward<T>(fn, ptr<T>(dout), ptr<T>(log_alpha), ptr<T>(u), mut<T>(dlog_alpha),
                                     log_alpha.numel());
    });
  };
}

}  // namespace koff::cpu
