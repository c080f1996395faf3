// Pointwise CUDA kernels, bf16 I/O with f32 math: binary ops, scale, axpy, bias, group gates, SiLU and
// SwiGLU (forward and backward; also with the neuron gate fused in), hard-concrete gates, AdamW (one
// tensor, or many f32 tensors in one launch), and the strided/dtype-converting copy that Tensor::copy_
// uses on the GPU.
// All are memory-bound grid-stride loops with 64-bit indices; the figure of merit is bytes moved
// over the copy ceiling (bench/cuda).
#include <cuda_fp16.h>

#include "cuda/common.cuh"
#include "cuda/elementwise.h"

namespace koff::cuda {

namespace {

template <BinaryOp Op>
__device__ __forceinline__ float apply(float x, float y) {
  if constexpr (Op == BinaryOp::add) return x + y;
  if constexpr (Op == BinaryOp::sub) return x - y;
  return x * y;
}

// f32: float4 loads when all three pointers are 16-byte aligned; the scalar tail handles the rest.
template <BinaryOp Op>
__global__ void binary_f32_kernel(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
                                  int64_t n, bool vec4) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec4) {
    const int64_t n4 = n / 4;
    for (int64_t j = i; j < n4; j += stride) {
      float4 x = reinterpret_cast<const float4*>(a)[j], y = reinterpret_cast<const float4*>(b)[j];
      reinterpret_cast<float4*>(out)[j] = {apply<Op>(x.x, y.x), apply<Op>(x.y, y.y), apply<Op>(x.z, y.z),
                                           apply<Op>(x.w, y.w)};
    }
    for (int64_t j = n4 * 4 + i; j < n; j += stride) out[j] = apply<Op>(a[j], b[j]);
  } else {
    for (int64_t j = i; j < n; j += stride) out[j] = apply<Op>(a[j], b[j]);
  }
}

template <BinaryOp Op>
__global__ void binary_bf16_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += stride)
    out[j] = __float2bfloat16(apply<Op>(__bfloat162float(a[j]), __bfloat162float(b[j])));
}

template <typename F>
void dispatch(BinaryOp op, F&& launch) {
  switch (op) {
    case BinaryOp::add: launch.template operator()<BinaryOp::add>(); break;
    case BinaryOp::sub: launch.template operator()<BinaryOp::sub>(); break;
    case BinaryOp::mul: launch.template operator()<BinaryOp::mul>(); break;
  }
}

// A grid-stride loop calling f(i) for i < n. The functors below hold their pointers by value.
template <typename F>
__global__ void map_kernel(int64_t n, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

template <typename F>
void launch_map(int64_t n, F f, cudaStream_t s) {
  if (n <= 0) return;
  map_kernel<<<grid_for(n, 256), 256, 0, s>>>(n, f);
  KOFF_CUDA_CHECK(cudaGetLastError());
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

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
struct ScaleF {
  const T* a;
  float s;
  T* out;
  __device__ void operator()(int64_t i) const { st(out, i, s * ld(a, i)); }
};
template <typename T>
struct AxpyF {
  T* y;
  const T* x;
  float alpha;
  __device__ void operator()(int64_t i) const { st(y, i, ld(y, i) + alpha * ld(x, i)); }
};
template <typename T>
struct BiasF {
  const T* x;
  const T* bias;
  T* out;
  int64_t cols;
  __device__ void operator()(int64_t i) const { st(out, i, ld(x, i) + ld(bias, i % cols)); }
};
template <typename T>
struct GroupsF {
  const T* x;
  const T* z;
  T* out;
  int64_t groups, k;
  __device__ void operator()(int64_t i) const { st(out, i, ld(x, i) * ld(z, (i / k) % groups)); }
};
template <typename T>
struct SiluF {
  const T* x;
  T* out;
  __device__ void operator()(int64_t i) const {
    const float v = ld(x, i);
    st(out, i, v * sigmoidf(v));
  }
};
template <typename T>
struct SiluBackF {
  const T* dy;
  const T* x;
  T* dx;
  __device__ void operator()(int64_t i) const {
    const float v = ld(x, i), s = sigmoidf(v);
    st(dx, i, ld(dy, i) * s * (1.0f + v * (1.0f - s)));
  }
};
template <typename T>
struct SwigluF {
  const T* gate;
  const T* up;
  T* out;
  __device__ void operator()(int64_t i) const {
    const float g = ld(gate, i);
    st(out, i, g * sigmoidf(g) * ld(up, i));
  }
};
template <typename T>
struct SwigluBackF {
  const T* dy;
  const T* gate;
  const T* up;
  T* dgate;
  T* dup;
  __device__ void operator()(int64_t i) const {
    const float g = ld(gate, i), s = sigmoidf(g), d = ld(dy, i);
    st(dup, i, d * g * s);
    st(dgate, i, d * ld(up, i) * s * (1.0f + g * (1.0f - s)));
  }
};

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

// Hard-concrete (KOFF_METHOD.md section 3), the CPU kernel's formulas in f32; constants from the host.
using HcConst = HardConcreteConstants;
__device__ __forceinline__ float hc_sample_s(const HcConst& c, float la, float u) {
  const float uc = fminf(fmaxf(u, c.eps_lo), c.eps_hi);
  return sigmoidf((logf(uc) - log1pf(-uc) + la) / c.beta);
}
template <typename T>
struct HardConcreteF {
  int mode;
  HcConst c;
  const T* la;
  const T* u;
  T* out;
  __device__ void operator()(int64_t i) const {
    const float a = ld(la, i);
    float r;
    if (mode == 0)
      r = fminf(fmaxf(hc_sample_s(c, a, ld(u, i)) * c.span + c.gamma, 0.0f), 1.0f);
    else if (mode == 1)
      r = fminf(fmaxf(sigmoidf(a) * c.span + c.gamma, 0.0f), 1.0f);
    else
      r = sigmoidf(a - c.shift);
    st(out, i, r);
  }
};
template <typename T>
struct HardConcreteBackF {
  int mode;
  HcConst c;
  const T* dout;
  const T* la;
  const T* u;
  T* dla;
  __device__ void operator()(int64_t i) const {
    const float a = ld(la, i), d = ld(dout, i);
    float r;
    if (mode == 0) {
      const float s = hc_sample_s(c, a, ld(u, i)), zbar = s * c.span + c.gamma;
      r = (zbar >= 0.0f && zbar <= 1.0f) ? d * c.span * s * (1.0f - s) / c.beta : 0.0f;
    } else if (mode == 1) {
      const float s = sigmoidf(a), zbar = s * c.span + c.gamma;
      r = (zbar >= 0.0f && zbar <= 1.0f) ? d * c.span * s * (1.0f - s) : 0.0f;
    } else {
      const float p = sigmoidf(a - c.shift);
      r = d * p * (1.0f - p);
    }
    st(dla, i, r);
  }
};

// AdamW, the CPU kernel's order of operations (engine/cpu/adamw.h) in f32.
__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v, const AdamWScalars& c) {
  p = p * c.decay;
  m = m + c.one_minus_beta1 * (g - m);
  v = c.beta2 * v + c.one_minus_beta2 * g * g;
  p -= c.step_size * m / (sqrtf(v) / c.sqrt_bias_correction2 + c.eps);
}
template <typename T>
struct AdamWF {
  T* param;
  const T* grad;
  T* m;
  T* v;
  AdamWScalars c;
  __device__ void operator()(int64_t i) const {
    float p = ld(param, i), mi = ld(m, i), vi = ld(v, i);
    adamw_one(p, ld(grad, i), mi, vi, c);
    st(param, i, p);
    st(m, i, mi);
    st(v, i, vi);
  }
};

// Multi-tensor AdamW: blockIdx.y picks the tensor, blockIdx.x strides over it.
constexpr int kAdamWMaxChunks = 64;
struct AdamWChunkList {
  AdamWChunk c[kAdamWMaxChunks];
};
__global__ void adamw_multi_kernel(AdamWChunkList list, AdamWScalars c) {
  const AdamWChunk& t = list.c[blockIdx.y];
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < t.n; i += stride) {
    float p = t.param[i], m = t.m[i], v = t.v[i];
    adamw_one(p, t.grad[i], m, v, c);
    t.param[i] = p;
    t.m[i] = m;
    t.v[i] = v;
  }
}

// ---- strided copy ----------------------------------------------------------------------------
struct CopyGeometry {
  int64_t shape[kMaxCopyDims], sstr[kMaxCopyDims], dstr[kMaxCopyDims];
  int ndim;
};

// dtype codes: koff::DType order f32, f64, bf16, f16, i32, i64.
__device__ __forceinline__ double load_any(const void* p, int dt, int64_t i) {
  switch (dt) {
    case 0: return static_cast<const float*>(p)[i];
    case 1: return static_cast<const double*>(p)[i];
    case 2: return __bfloat162float(static_cast<const bf16_t*>(p)[i]);
    case 3: return __half2float(static_cast<const __half*>(p)[i]);
    case 4: return static_cast<const int32_t*>(p)[i];
    default: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
  }
}
__device__ __forceinline__ void store_any(void* p, int dt, int64_t i, double v) {
  switch (dt) {
    case 0: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case 1: static_cast<double*>(p)[i] = v; break;
    case 2: static_cast<bf16_t*>(p)[i] = __float2bfloat16(static_cast<float>(v)); break;
    case 3: static_cast<__half*>(p)[i] = __float2half(static_cast<float>(v)); break;
    case 4: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    default: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
  }
}
__device__ __forceinline__ int elem_size(int dt) { return dt == 1 || dt == 5 ? 8 : (dt == 2 || dt == 3 ? 2 : 4); }

__global__ void strided_copy_kernel(char* dst, int ddt, const char* src, int sdt, CopyGeometry g, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const bool same = ddt == sdt;
  const int es = elem_size(sdt);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    int64_t rem = i, so = 0, dof = 0;
    for (int d = g.ndim - 1; d >= 0; --d) {
      const int64_t idx = rem % g.shape[d];
      rem /= g.shape[d];
      so += idx * g.sstr[d];
      dof += idx * g.dstr[d];
    }
    if (same) {
      if (es == 8) reinterpret_cast<int64_t*>(dst)[dof] = reinterpret_cast<const int64_t*>(src)[so];
      else if (es == 4) reinterpret_cast<int32_t*>(dst)[dof] = reinterpret_cast<const int32_t*>(src)[so];
      else reinterpret_cast<int16_t*>(dst)[dof] = reinterpret_cast<const int16_t*>(src)[so];
    } else {
      store_any(dst, ddt, dof, load_any(src, sdt, so));
    }
  }
}

}  // namespace

void binary(BinaryOp op, const float* a, const float* b, float* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const bool vec4 = ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) |
                      reinterpret_cast<uintptr_t>(out)) & 15) == 0;
  dispatch(op, [&]<BinaryOp Op>() {
    binary_f32_kernel<Op><<<grid_for(vec4 ? n / 4 + 1 : n, 256), 256, 0, stream>>>(a, b, out, n, vec4);
  });
  KOFF_CUDA_CHECK(cudaGetLastError());
}

void binary(BinaryOp op, const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out, int64_t n,
            cudaStream_t stream) {
  if (n == 0) return;
  dispatch(op, [&]<BinaryOp Op>() { binary_bf16_kernel<Op><<<grid_for(n, 256), 256, 0, stream>>>(a, b, out, n); });
  KOFF_CUDA_CHECK(cudaGetLastError());
}

void binary(Dt dt, int kind, const void* a, const void* b, void* out, int64_t n, cudaStream_t s) {
  const BinaryOp op = kind == 0 ? BinaryOp::add : (kind == 1 ? BinaryOp::sub : BinaryOp::mul);
  if (dt == Dt::f32)
    binary(op, static_cast<const float*>(a), static_cast<const float*>(b), static_cast<float*>(out), n, s);
  else
    binary(op, static_cast<const bf16_t*>(a), static_cast<const bf16_t*>(b), static_cast<bf16_t*>(out), n, s);
}

void scale(Dt dt, const void* a, float alpha, void* out, int64_t n, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n, ScaleF<T>{static_cast<const T*>(a), alpha, static_cast<T*>(out)}, s);
  });
}
void axpy(Dt dt, void* y, const void* x, float alpha, int64_t n, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n, AxpyF<T>{static_cast<T*>(y), static_cast<const T*>(x), alpha}, s);
  });
}
void add_bias(Dt dt, const void* x, const void* bias, void* out, int64_t rows, int64_t cols, cudaStream_t s) {
  if (cols == 0) return;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(rows * cols, BiasF<T>{static_cast<const T*>(x), static_cast<const T*>(bias), static_cast<T*>(out), cols},
               s);
  });
}
void mul_groups(Dt dt, const void* x, const void* z, void* out, int64_t rows, int64_t groups, int64_t k,
                cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(rows * groups * k,
               GroupsF<T>{static_cast<const T*>(x), static_cast<const T*>(z), static_cast<T*>(out), groups, k}, s);
  });
}
void silu(Dt dt, const void* x, void* out, int64_t n, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n, SiluF<T>{static_cast<const T*>(x), static_cast<T*>(out)}, s);
  });
}
void silu_backward(Dt dt, const void* dy, const void* x, void* dx, int64_t n, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n, SiluBackF<T>{static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<T*>(dx)}, s);
  });
}
void swiglu(Dt dt, const void* gate, const void* up, void* out, int64_t n, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n, SwigluF<T>{static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out)}, s);
  });
}
void swiglu_backward(Dt dt, const void* dy, const void* gate, const void* up, void* dgate, void* dup, int64_t n,
                     cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n,
               SwigluBackF<T>{static_cast<const T*>(dy), static_cast<const T*>(gate), static_cast<const T*>(up),
                              static_cast<T*>(dgate), static_cast<T*>(dup)},
               s);
  });
}
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
void hard_concrete(Dt dt, int mode, const HardConcreteConstants& c, const void* log_alpha, const void* u, void* out,
                   int64_t n, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n,
               HardConcreteF<T>{mode, c, static_cast<const T*>(log_alpha), static_cast<const T*>(u),
                                static_cast<T*>(out)},
               s);
  });
}
void hard_concrete_backward(Dt dt, int mode, const HardConcreteConstants& c, const void* dout, const void* log_alpha,
                            const void* u, void* dla, int64_t n, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n,
               HardConcreteBackF<T>{mode, c, static_cast<const T*>(dout), static_cast<const T*>(log_alpha),
                                    static_cast<const T*>(u), static_cast<T*>(dla)},
               s);
  });
}
void adamw(Dt dt, void* param, const void* grad, void* m, void* v, int64_t n, const AdamWScalars& c, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n, AdamWF<T>{static_cast<T*>(param), static_cast<const T*>(grad), static_cast<T*>(m), static_cast<T*>(v), c},
               s);
  });
}
void adamw_multi(const AdamWChunk* chunks, int count, const AdamWScalars& c, cudaStream_t s) {
  for (int first = 0; first < count; first += kAdamWMaxChunks) {
    AdamWChunkList list{};
    const int k = count - first < kAdamWMaxChunks ? count - first : kAdamWMaxChunks;
    int64_t largest = 0;
    for (int i = 0; i < k; ++i) {
      list.c[i] = chunks[first + i];
      largest = list.c[i].n > largest ? list.c[i].n : largest;
    }
    if (largest == 0) continue;
    const unsigned gx = grid_for(largest, 256) < 1024 ? grid_for(largest, 256) : 1024;
    adamw_multi_kernel<<<dim3(gx, unsigned(k)), 256, 0, s>>>(list, c);
    KOFF_CUDA_CHECK(cudaGetLastError());
  }
}

void strided_copy(void* dst, int dst_dtype, const int64_t* dst_strides, const void* src, int src_dtype,
                  const int64_t* src_strides, const int64_t* shape, int ndim, int64_t offset_dst, int64_t offset_src,
                  cudaStream_t s) {
  CopyGeometry g{};
  g.ndim = ndim;
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) {
    g.shape[d] = shape[d];
    g.sstr[d] = src_strides[d];
    g.dstr[d] = dst_strides[d];
    n *= shape[d];
  }
  if (n == 0) return;
  const int64_t des = int64_t(dst_dtype == 1 || dst_dtype == 5 ? 8 : (dst_dtype == 2 || dst_dtype == 3 ? 2 : 4));
  const int64_t ses = int64_t(src_dtype == 1 || src_dtype == 5 ? 8 : (src_dtype == 2 || src_dtype == 3 ? 2 : 4));
  strided_copy_kernel<<<grid_for(n, 256), 256, 0, s>>>(static_cast<char*>(dst) + offset_dst * des, dst_dtype,
                                                        static_cast<const char*>(src) + offset_src * ses, src_dtype, g,
                                                        n);
  KOFF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace koff::cuda
