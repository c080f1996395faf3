// Gates, bf16 I/O with f32 math (double for the column sums):
//   mul_groups             x as [rows, G, K]: out = x z[g]  (a head gate: K = head_dim; a neuron gate: K = 1)
//   sum_groups_product     its gradient dz[g] = sum over rows and k of dy x, a column sum of width K
//   swiglu_gated           gate/up [rows, F], z [F]: out = silu(gate) up z[c], SwiGLU with the neuron gate
//                          fused in; backward dgate = dy z u s (1 + g (1 - s)), dup = dy z g s (s = sigmoid(g))
//                          and, when wanted, dz[c] = sum over rows of dy silu(g) u, a column sum that
//                          writes the elementwise gradients as it reads (one pass)
//   hard_concrete          the gate functions of engine/tensor/backend.h's GateFn (KOFF_METHOD.md section 3)
//                          and the backward of sample (d/d log_alpha = (zeta - gamma) s (1 - s) / beta inside
//                          the clamp, 0 outside) and p_open (p (1 - p)).
// The maps are memory-bound grid-stride loops with 64-bit indices (a row map for the per-column gate z);
// the column sums are deterministic (cuda/patterns.cuh).
#include <cmath>

#include "cuda/backend.h"
#include "cuda/common.cuh"
#include "cuda/patterns.cuh"

namespace koff::cuda {

namespace {

// ---- group gates -----------------------------------------------------------------------------
template <typename T>
struct GroupsF {
  const T* x;
  const T* z;
  T* out;
  int64_t groups, k;
  __device__ void operator()(int64_t i) const { st(out, i, ld(x, i) * ld(z, (i / k) % groups)); }
};
template <typename T>
struct ProductOf {
  const T* a;
  const T* b;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const { return ld(a, r * cols + c) * ld(b, r * cols + c); }
};

// ---- gated SwiGLU ----------------------------------------------------------------------------
// Gradients of the gated SwiGLU y = silu(g) u z at one element, in f32 (the CPU kernel's formulas,
// engine/cpu/activations.h): dgate, dup, and m = silu(g) u, the term dz sums (times dy).
struct SwigluGatedGrad {
  float dgate, dup, m;
};
__device__ __forceinline__ SwigluGatedGrad swiglu_gated_grad(float dy, float g, float u, float z) {
  const float s = 1.0f / (1.0f + expf(-g)), d = dy * z;
  return {d * u * s * (1.0f + g * (1.0f - s)), d * g * s, g * s * u};
}

// f(r, c) over a [rows, cols] matrix without index division: blockIdx.x tiles the columns, blockIdx.y
// strides over the rows (for per-column operands such as a neuron gate).
template <typename F>
__global__ void rows_map_kernel(int64_t rows, int64_t cols, F f) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) f(r, c);
}

template <typename F>
void launch_rows_map(int64_t rows, int64_t cols, F f, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  const int threads = cols >= 256 ? 256 : int((cols + 31) / 32) * 32;
  const dim3 grid(unsigned((cols + threads - 1) / threads), unsigned(rows < 65535 ? rows : 65535));
  rows_map_kernel<<<grid, threads, 0, s>>>(rows, cols, f);
  KOFF_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
struct SwigluGatedF {
  const T* gate;
  const T* up;
  const T* z;
  T* out;
  int64_t cols;
  __device__ void operator()(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    const float g = ld(gate, i);
    st(out, i, g * sigmoidf(g) * ld(up, i) * ld(z, c));
  }
};
template <typename T>
struct SwigluGatedBackF {
  const T* dy;
  const T* gate;
  const T* up;
  const T* z;
  T* dgate;
  T* dup;
  int64_t cols;
  __device__ void operator()(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    const SwigluGatedGrad g = swiglu_gated_grad(ld(dy, i), ld(gate, i), ld(up, i), ld(z, c));
    st(dgate, i, g.dgate);
    st(dup, i, g.dup);
  }
};

// The gated SwiGLU's backward at (r, c): writes dgate and dup, returns dy silu(g) u for dz's column sum.
template <typename T>
struct SwigluGatedBackAt {
  const T* dy;
  const T* gate;
  const T* up;
  const T* z;
  T* dgate;
  T* dup;
  int64_t cols;
  __device__ double operator()(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    const float d = ld(dy, i);
    const SwigluGatedGrad g = swiglu_gated_grad(d, ld(gate, i), ld(up, i), ld(z, c));
    st(dgate, i, g.dgate);
    st(dup, i, g.dup);
    return double(d) * double(g.m);
  }
};

// ---- hard-concrete ---------------------------------------------------------------------------
// Hard-concrete (KOFF_METHOD.md section 3), the CPU kernel's formulas in f32; constants from the host:
// span = zeta - gamma, shift = beta log(-gamma / zeta), u clamped to [eps_lo, eps_hi] (koff::HardConcrete).
struct HardConcreteConstants {
  float span, gamma, shift, beta, eps_lo, eps_hi;
};
using HcConst = HardConcreteConstants;
__device__ __forceinline__ float hc_sample_s(const HcConst& c, float la, float u) {
  const float uc = fminf(fmaxf(u, c.eps_lo), c.eps_hi);
  return sigmoidf((logf(uc) - log1pf(-uc) + la) / c.beta);
}
template <typename T>
struct HardConcreteF {
  GateFn fn;
  HcConst c;
  const T* la;
  const T* u;
  T* out;
  __device__ void operator()(int64_t i) const {
    const float a = ld(la, i);
    float r;
    if (fn == GateFn::sample)
      r = fminf(fmaxf(hc_sample_s(c, a, ld(u, i)) * c.span + c.gamma, 0.0f), 1.0f);
    else if (fn == GateFn::deterministic)
      r = fminf(fmaxf(sigmoidf(a) * c.span + c.gamma, 0.0f), 1.0f);
    else
      r = sigmoidf(a - c.shift);
    st(out, i, r);
  }
};
template <typename T>
struct HardConcreteBackF {
  GateFn fn;
  HcConst c;
  const T* dout;
  const T* la;
  const T* u;
  T* dla;
  __device__ void operator()(int64_t i) const {
    const float a = ld(la, i), d = ld(dout, i);
    float r;
    if (fn == GateFn::sample) {
      const float s = hc_sample_s(c, a, ld(u, i)), zbar = s * c.span + c.gamma;
      r = (zbar >= 0.0f && zbar <= 1.0f) ? d * c.span * s * (1.0f - s) / c.beta : 0.0f;
    } else {  // p_open
      const float p = sigmoidf(a - c.shift);
      r = d * p * (1.0f - p);
    }
    st(dla, i, r);
  }
};

// ---- launchers -------------------------------------------------------------------------------
void mul_groups(Dt dt, const void* x, const void* z, void* out, int64_t rows, int64_t groups, int64_t k,
                cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(rows * groups * k,
               GroupsF<T>{static_cast<const T*>(x), static_cast<const T*>(z), static_cast<T*>(out), groups, k}, s);
  });
}

// dz[g] = sum_{r, j} dy[r, g, j] x[r, g, j]; scratch column_chunks(rows) * groups * k doubles.
void sum_groups_product(Dt dt, const void* dy, const void* x, void* dz, int64_t rows, int64_t groups, int64_t k,
                        double* scratch, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    const int64_t cols = groups * k;
    column_sum(ProductOf<T>{static_cast<const T*>(dy), static_cast<const T*>(x), cols}, rows, cols, k,
               static_cast<T*>(dz), scratch, s);
  });
}

// gate/up [rows, cols], z [cols]: out = silu(gate) up z[c]; the backward writes dgate and dup only
// (z a constant; with dz see swiglu_gated_backward_dz).
void swiglu_gated(Dt dt, const void* gate, const void* up, const void* z, void* out, int64_t rows, int64_t cols,
                  cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_rows_map(rows, cols,
                    SwigluGatedF<T>{static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<const T*>(z),
                                    static_cast<T*>(out), cols},
                    s);
  });
}
void swiglu_gated_backward(Dt dt, const void* dy, const void* gate, const void* up, const void* z, void* dgate,
                           void* dup, int64_t rows, int64_t cols, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_rows_map(rows, cols,
                    SwigluGatedBackF<T>{static_cast<const T*>(dy), static_cast<const T*>(gate),
                                        static_cast<const T*>(up), static_cast<const T*>(z), static_cast<T*>(dgate),
                                        static_cast<T*>(dup), cols},
                    s);
  });
}

// swiglu_gated_backward plus dz[c] = sum_r dy silu(gate) up, in one pass: the elementwise gradients
// are written by the column reduction's first kernel. Scratch column_chunks(rows) * cols doubles.
void swiglu_gated_backward_dz(Dt dt, const void* dy, const void* gate, const void* up, const void* z, void* dgate,
                              void* dup, void* dz, int64_t rows, int64_t cols, double* scratch, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    // column_partials_kernel visits every (r, c) exactly once, so the elementwise writes ride along.
    column_sum(SwigluGatedBackAt<T>{static_cast<const T*>(dy), static_cast<const T*>(gate), static_cast<const T*>(up),
                                    static_cast<const T*>(z), static_cast<T*>(dgate), static_cast<T*>(dup), cols},
               rows, cols, 1, static_cast<T*>(dz), scratch, s);
  });
}

// The gate function `fn` of log_alpha (and u, for sample), and its backward (sample or p_open).
void hard_concrete(Dt dt, GateFn fn, const HardConcreteConstants& c, const void* log_alpha, const void* u, void* out,
                   int64_t n, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n,
               HardConcreteF<T>{fn, c, static_cast<const T*>(log_alpha), static_cast<const T*>(u),
                                static_cast<T*>(out)},
               s);
  });
}
void hard_concrete_backward(Dt dt, GateFn fn, const HardConcreteConstants& c, const void* dout, const void* log_alpha,
                            const void* u, void* dla, int64_t n, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n,
               HardConcreteBackF<T>{fn, c, static_cast<const T*>(dout), static_cast<const T*>(log_alpha),
                                    static_cast<const T*>(u), static_cast<T*>(dla)},
               s);
  });
}

// The constants of koff::HardConcrete, in f32.
HardConcreteConstants hc_constants() {
  using HC = koff::HardConcrete;
  return {float(HC::zeta - HC::gamma), float(HC::gamma), float(HC::beta * std::log(-HC::gamma / HC::zeta)),
          float(HC::beta), float(HC::eps), float(1 - HC::eps)};
}

// ---- the Backend entries ---------------------------------------------------------------------

void mul_groups(const Tensor& x, const Tensor& z, int64_t rows, int64_t groups, int64_t k, Tensor& out) {
  OpScope op("mul_groups", x);
  mul_groups(dt_of(x, "mul_groups"), cptr(x), cptr(z), mptr(out), rows, groups, k, op.s());
}
void sum_groups_product(const Tensor& dy, const Tensor& x, int64_t rows, int64_t groups, int64_t k, Tensor& dz) {
  OpScope op("sum_groups_product", x);
  Tensor scratch = doubles(column_chunks(rows) * groups * k, x);
  sum_groups_product(dt_of(x, "sum_groups_product"), cptr(dy), cptr(x), mptr(dz), rows, groups, k, dptr(scratch),
                     op.s());
}
void swiglu_gated(const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& out) {
  OpScope op("swiglu_gated", gate);
  swiglu_gated(dt_of(gate, "swiglu_gated"), cptr(gate), cptr(up), cptr(z), mptr(out), rows_of(gate), z.numel(), op.s());
}
void swiglu_gated_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& dgate,
                           Tensor& dup, Tensor& dz) {
  OpScope op("swiglu_gated_backward", gate);
  const Dt dt = dt_of(gate, "swiglu_gated_backward");
  const int64_t rows = rows_of(gate), cols = z.numel();
  if (!dz.defined()) {  // z a constant: elementwise only
    swiglu_gated_backward(dt, cptr(dy), cptr(gate), cptr(up), cptr(z), mptr(dgate), mptr(dup), rows, cols, op.s());
    return;
  }
  Tensor scratch = doubles(column_chunks(rows) * cols, gate);
  swiglu_gated_backward_dz(dt, cptr(dy), cptr(gate), cptr(up), cptr(z), mptr(dgate), mptr(dup), mptr(dz), rows, cols,
                           dptr(scratch), op.s());
}
void hard_concrete(GateFn fn, const Tensor& log_alpha, const Tensor& u, Tensor& out) {
  OpScope op("hard_concrete", log_alpha);
  hard_concrete(dt_of(log_alpha, "hard_concrete"), fn, hc_constants(), cptr(log_alpha), cptr(u), mptr(out),
                log_alpha.numel(), op.s());
}
void hard_concrete_backward(GateFn fn, const Tensor& dout, const Tensor& log_alpha, const Tensor& u,
                            Tensor& dlog_alpha) {
  if (fn != GateFn::sample && fn != GateFn::p_open)
    throw Error("hard_concrete_backward: the backward exists for GateFn::sample and GateFn::p_open only");
  OpScope op("hard_concrete_backward", log_alpha);
  hard_concrete_backward(dt_of(log_alpha, "hard_concrete_backward"), fn, hc_constants(), cptr(dout), cptr(log_alpha),
                         cptr(u), mptr(dlog_alpha), log_alpha.numel(), op.s());
}

}  // namespace

void fill_gates(Backend& b) {
  b.mul_groups = mul_groups;
  b.sum_groups_product = sum_groups_product;
  b.swiglu_gated = swiglu_gated;
  b.swiglu_gated_backward = swiglu_gated_backward;
  b.hard_concrete = hard_concrete;
  b.hard_concrete_backward = hard_concrete_backward;
}

}  // namespace koff::cuda
