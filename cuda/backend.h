// The CUDA backend's host side, shared by its files (internal to cuda/).
//
// The backend is the table of engine/tensor/backend.h for f32 and bf16 tensors on a GPU (ids/targets
// i32 or i64). One file per op family fills its entries, the same families as engine/cpu and
// engine/ops: elementwise.cu, gemm.cpp, embedding.cu, norm.cu, rope.cu, attention.cu (+ its
// tensor-core half attention_mma.cu), loss.cu, gates.cu, adamw.cu. Each opens with the math of its
// kernels and holds the kernels, their launchers (raw device pointers, `Dt` picks the element type,
// enqueued on the device's stream, never synchronising) and, last, the entries and `fill_<family>`.
// An entry checks dtypes, opens an NVTX range for the op (Nsight shows it over the op's kernels),
// takes scratch from the caching allocator as device tensors, and calls the launcher. The semantics
// are the CPU backend's, which the op harness checks op by op. backend.cpp puts the table together.
//
// Nothing synchronises except where an entry returns a host value: cross_entropy and
// linear_cross_entropy return the counted rows (one 8-byte copy back), which is also where an
// out-of-range id or target flagged on the device (cuda/context.h) becomes a koff::Error.
//
// Statistics that a backward re-reads (attention and cross-entropy lse, RMSNorm rstd) are f32 for
// both dtypes (ops/ allocates them so).
#pragma once

#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/context.h"
#include "cuda/dtype.h"

// engine/tensor/tensor.h and error.h are nvcc-safe (FMT_USE_CONSTEXPR, the nvcc KOFF_CHECK).
#include "engine/tensor/backend.h"

namespace koff::cuda {

// The CUDA table (backend.cpp), built on first use; register_if_available (allocator.cpp) registers it.
const Backend& cuda_backend();

// Each op family's file fills its entries (the same families and file names in every layer).
void fill_elementwise(Backend&), fill_gemm(Backend&), fill_embedding(Backend&), fill_norm(Backend&),
    fill_rope(Backend&), fill_attention(Backend&), fill_loss(Backend&), fill_gates(Backend&), fill_adamw(Backend&);

// ---- helpers of the entries -------------------------------------------------------------------

// NVTX range for the op's lifetime on the host (Nsight Systems shows it over the op's kernels); makes
// the tensor's device current and names its stream.
class OpScope {
 public:
  OpScope(const char* name, const Tensor& t) : device_(t.device().index), guard_(device_) { nvtxRangePushA(name); }
  ~OpScope() { nvtxRangePop(); }
  cudaStream_t s() const { return stream(device_); }
  int device() const { return device_; }

 private:
  int device_;
  DeviceGuard guard_;
};

inline Dt dt_of(const Tensor& t, const char* op) {
  if (t.dtype() == DType::f32) return Dt::f32;
  if (t.dtype() == DType::bf16) return Dt::bf16;
  throw Error(std::string(op) + ": the CUDA backend computes in f32 or bf16 (f32 math), got " + dtype_name(t.dtype()));
}
inline const void* cptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
inline void* mptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
// Whether ids/targets are i64 (else i32; anything else is an error).
inline bool idx64(const Tensor& ids, const char* op) {
  if (!(ids.dtype() == DType::i32 || ids.dtype() == DType::i64))
    throw Error(std::string(op) + ": ids/targets must be i32 or i64, got " + dtype_name(ids.dtype()));
  return ids.dtype() == DType::i64;
}
// Statistics tensors (lse, rstd, the memory gate) are f32 for f32 and bf16 inputs.
inline float* stat(const Tensor& t, const char* op, const char* what) {
  if (!(t.dtype() == DType::f32))
    throw Error(std::string(op) + ": " + what + " must be f32 on the CUDA backend, got " + dtype_name(t.dtype()));
  return t.data<float>();
}
// Rows of a [..., n] tensor.
inline int64_t rows_of(const Tensor& t) {
  const int64_t n = t.dim() ? t.size(-1) : 1;
  return n ? t.numel() / n : 0;
}
// Scratch of n doubles (at least one) on the device of `like`.
inline Tensor doubles(int64_t n, const Tensor& like) {
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::f64, like.device());
}
inline double* dptr(const Tensor& t) { return t.data<double>(); }

// ---- launchers one file lends another ---------------------------------------------------------

// out[r, c] = x[r, c] + bias[c] (elementwise.cu; gemm.cpp's linear of an empty product).
void add_bias(Dt dt, const void* x, const void* bias, void* out, int64_t rows, int64_t cols, cudaStream_t s);
// out[0] (type dt) = sum of n doubles, in a fixed order (loss.cu; elementwise.cu's sum and dot).
void sum_doubles(const double* a, int64_t n, Dt dt, void* out, cudaStream_t s);
// Strided copy with dtype conversion between f32, f64, bf16, f16, i32, i64 (dtype codes = koff::DType
// values), up to kMaxCopyDims dims (the caller checks); strides and offsets in elements (copy.cu; the
// allocator's copy_strided, behind Tensor::copy_ on the GPU).
constexpr int kMaxCopyDims = 8;
void strided_copy(void* dst, int dst_dtype, const int64_t* dst_strides, const void* src, int src_dtype,
                  const int64_t* src_strides, const int64_t* shape, int ndim, int64_t offset_dst, int64_t offset_src,
                  cudaStream_t s);

}  // namespace koff::cuda
