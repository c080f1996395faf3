// Embedding lookup and its gradient, bf16 or f32 tables, i32 or i64 ids; grid-stride loops over the
// n d output elements (memory-bound):
//   forward   out[i, :] = table[ids[i], :]
//   backward  dtable[ids[i], :] += dy[i, :] (dtable zeroed by the caller), by atomic adds: repeated ids
//             add in an unspecified order (bf16: atomics on bf16 values).
// An id outside [0, vocab) is skipped (forward: a zero row) and raises the device's error flag
// (cuda/context.h), which the next synchronisation turns into a koff::Error.
#include "cuda/backend.h"
#include "cuda/common.cuh"
#include "cuda/patterns.cuh"

namespace koff::cuda {

namespace {

template <typename T, typename I>
__global__ void embedding_kernel(const T* table, const I* ids, T* out, int64_t n, int64_t vocab, int64_t d,
                                 int* flag) {
  const int64_t total = n * d, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t id = ld_index(ids, i / d);
    if (id < 0 || id >= vocab) {
      atomicExch(flag, 1);
      st(out, i, 0.0f);
      continue;
    }
    out[i] = table[id * d + i % d];
  }
}

__device__ __forceinline__ void add_to(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void add_to(bf16_t* p, float v) { atomicAdd(p, __float2bfloat16(v)); }

template <typename T, typename I>
__global__ void embedding_backward_kernel(const T* dy, const I* ids, T* dtable, int64_t n, int64_t vocab, int64_t d,
                                          int* flag) {
  const int64_t total = n * d, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t id = ld_index(ids, i / d);
    if (id < 0 || id >= vocab) {
      atomicExch(flag, 1);
      continue;
    }
    add_to(dtable + id * d + i % d, ld(dy, i));
  }
}

void embedding(Dt dt, const void* table, const void* ids, bool idx64, void* out, int64_t n, int64_t vocab, int64_t d,
               int* flag, cudaStream_t s) {
  if (n * d == 0) return;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    on_index(idx64, [&](auto itag) {
      using I = decltype(itag);
      embedding_kernel<T, I><<<grid_for(n * d, 256), 256, 0, s>>>(static_cast<const T*>(table),
                                                                  static_cast<const I*>(ids), static_cast<T*>(out), n,
                                                                  vocab, d, flag);
      KOFF_CUDA_CHECK(cudaGetLastError());
    });
  });
}

void embedding_backward(Dt dt, const void* dy, const void* ids, bool idx64, void* dtable, int64_t n, int64_t vocab,
                        int64_t d, int* flag, cudaStream_t s) {
  if (n * d == 0) return;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    on_index(idx64, [&](auto itag) {
      using I = decltype(itag);
      embedding_backward_kernel<T, I><<<grid_for(n * d, 256), 256, 0, s>>>(
          static_cast<const T*>(dy), static_cast<const I*>(ids), static_cast<T*>(dtable), n, vocab, d, flag);
      KOFF_CUDA_CHECK(cudaGetLastError());
    });
  });
}

// ---- the Backend entries ---------------------------------------------------------------------

void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  OpScope op("embedding", table);
  embedding(dt_of(table, "embedding"), cptr(table), cptr(ids), idx64(ids, "embedding"), mptr(out), ids.numel(),
            table.size(0), table.size(1), error_flag(op.device()), op.s());
}
void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) {
  OpScope op("embedding_backward", dy);
  embedding_backward(dt_of(dy, "embedding_backward"), cptr(dy), cptr(ids), idx64(ids, "embedding_backward"),
                     mptr(dtable), ids.numel(), dtable.size(0), dtable.size(1), error_flag(op.device()), op.s());
}

}  // namespace

void fill_embedding(Backend& b) {
  b.embedding = embedding;
  b.embedding_backward = embedding_backward;
}

}  // namespace koff::cuda
