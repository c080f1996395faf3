// Fake cuda_runtime.h for the emulator.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "emu_core.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))

struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
// atomicExch (the error flag of cuda/embedding.cu): fibers switch only at barriers and warp
// collectives, so a plain exchange is atomic.
inline int atomicExch(int* p, int v) {
  const int old = *p;
  *p = v;
  return old;
}

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8, cudaFuncAttributePreferredSharedMemoryCarveout = 9 };
enum cudaSharedCarveout { cudaSharedmemCarveoutDefault = -1, cudaSharedmemCarveoutMaxShared = 100 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "emulated error"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }

namespace emu {
inline constexpr size_t kSmemArena = 256 * 1024;
inline size_t max_dynamic_smem = 48 * 1024;
inline long launches = 0;
void launch_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);  // harness
}  // namespace emu

template <typename F>
cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value > 232448) return cudaErrorInvalidValue;
    emu::max_dynamic_smem = size_t(value);
  }
  return cudaSuccess;
}

template <typename... P, size_t... I>
void emu_call(void (*f)(P...), void** args, std::index_sequence<I...>) {
  f(*static_cast<std::remove_reference_t<P>*>(args[I])...);
}
template <typename... P>
cudaError_t cudaLaunchKernel(void (*f)(P...), dim3 grid, dim3 block, void** args, size_t smem, cudaStream_t) {
  if (smem > emu::max_dynamic_smem) {
    std::fprintf(stderr, "EMULATOR ERROR: launch with %zu bytes of dynamic smem above the attribute %zu\n", smem,
                 emu::max_dynamic_smem);
    std::abort();
  }
  emu::max_dynamic_smem = 48 * 1024;  // attributes are per kernel: make the next launch set its own
  ++emu::launches;
  emu::launch_grid(grid, block, smem, [&] { emu_call(f, args, std::index_sequence_for<P...>{}); });
  return cudaSuccess;
}
