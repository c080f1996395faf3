// Device helpers shared by the kernel files: element load/store with f32 math, launch sizing, warp
// and block reductions (shuffles), the Dt dispatch and a kernel launch helper. Not for host-only
// translation units. No <<<>>> here: the CPU emulator of tests/cuda_emu compiles the attention kernels
// (and this header) as plain C++; the launch patterns of the other families are in cuda/patterns.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/dtype.h"

namespace koff::cuda {

using bf16_t = __nv_bfloat16;

__device__ __forceinline__ float ld(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16_t* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16_t* p, int64_t i, float v) { p[i] = __float2bfloat16(v); }

template <typename I>
__device__ __forceinline__ int64_t ld_index(const I* p, int64_t i) {
  return static_cast<int64_t>(p[i]);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 values of V. Ends with a barrier, so it can be called again at once.
template <typename V>
__device__ __forceinline__ V block_sum(V v, V* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  V t = lane < nwarps ? scratch[lane] : V(0);
  t = warp_sum(t);
  __syncthreads();
  return t;
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? scratch[lane] : -INFINITY;
  t = warp_max(t);
  __syncthreads();
  return t;
}

// sigmoid(x) = 1 / (1 + e^-x), in f32 (the pointwise maps of elementwise.cu and gates.cu).
__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// Grid for a grid-stride loop over n items: enough blocks to fill an H200 several times over.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 4 ? 65535 * 4 : blocks));
}

// Launches kernel<<<grid, threads, smem, s>>>(params...) through cudaLaunchKernel (plain C++, so the
// CPU emulator of tests/cuda_emu runs the same call), raising the kernel's dynamic shared memory limit
// first when it needs more than the default 48 KiB. The parameters must have exactly the kernel's types.
template <typename Kernel, typename... Params>
void launch(Kernel* kernel, dim3 grid, int threads, size_t smem, cudaStream_t s, Params... params) {
  static_assert(std::is_same_v<Kernel, void(Params...)>, "cudaLaunchKernel reads the arguments as the kernel's types");
  if (smem > 48 * 1024) {
    KOFF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    KOFF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         int(cudaSharedmemCarveoutMaxShared)));
  }
  void* args[] = {&params...};
  KOFF_CUDA_CHECK(cudaLaunchKernel(kernel, grid, dim3(unsigned(threads)), args, smem, s));
}

// Calls fn(T{}) with T = float or bf16_t.
template <typename Fn>
void on_dt(Dt dt, Fn&& fn) {
  if (dt == Dt::f32)
    fn(float{});
  else
    fn(bf16_t{});
}

}  // namespace koff::cuda
