// Emulator stand-in for cuda/common.cuh.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/kernels.h"
#include "engine/tensor/error.h"

#define KOFF_CUDA_CHECK(call)                                                   \
  do {                                                                          \
    if ((call) != cudaSuccess) throw ::koff::Error(std::string("CUDA: ") + #call); \
  } while (0)

namespace koff::cuda {
using bf16_t = __nv_bfloat16;
inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
}  // namespace koff::cuda
