// The attention family's declarations shared by its two files (internal to cuda/): the shape of a
// call, and the tensor-core half (attention_mma.cu) that attention.cu's entries take where it applies.
// Plain C++: tests/test_cuda.cpp and the CPU emulator of tests/cuda_emu include it too.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "cuda/dtype.h"

namespace koff::cuda {

struct AttentionShape {
  int64_t batch, tq, tk, heads, groups, mem, head_dim;
};

// ---- attention_mma.cu: attention on tensor cores (WMMA), bf16 only ----------------------------
// Whether a call takes the tensor-core kernels: bf16, head_dim 64 or 128, at most 64 query heads per
// KV head, every pointer in `tensors` 16-byte aligned, and KOFF_CUDA_ATTENTION not "simt" ("mma",
// "auto" or unset take them where they apply; another value is an error). Read at every call. They have
// no memory gate: the backend takes the SIMT kernels (attention.cu) for gated calls.
bool attention_use_mma(Dt dt, const AttentionShape& d, std::initializer_list<const void*> tensors);
void attention_forward_mma(const void* q, const void* k, const void* v, const void* mem_k, const void* mem_v, void* out,
                           float* lse, const AttentionShape& d, float scale, bool causal, cudaStream_t s);
// dsum: scratch [B, Tq, H] f32.
void attention_backward_mma(const void* dout, const void* q, const void* k, const void* v, const void* mem_k,
                            const void* mem_v, const void* out, const float* lse, float* dsum, void* dq, void* dk,
                            void* dv, void* dmem_k, void* dmem_v, const AttentionShape& d, float scale, bool causal,
                            cudaStream_t s);

}  // namespace koff::cuda
