// Elementwise CUDA kernels on raw device pointers: out[i] = a[i] (op) b[i] for i < n.
// f32, and bf16 storage with f32 math. Grid-stride loops, 4 elements per thread where aligned.
// Memory-bound: the figure of merit is bytes moved (12 bytes per f32 element) over the copy ceiling.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace koff::cuda {

enum class BinaryOp { add, sub, mul };

void binary(BinaryOp op, const float* a, const float* b, float* out, int64_t n, cudaStream_t stream = nullptr);
void binary(BinaryOp op, const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out, int64_t n,
            cudaStream_t stream = nullptr);

}  // namespace koff::cuda
