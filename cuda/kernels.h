// Launchers of the CUDA kernels, on raw device pointers. Host code (cuda/backend.cpp) picks the
// element type; every launcher takes `Dt` (f32, or bf16 storage with f32 math), enqueues on `stream`
// and never synchronises. Index tensors (ids, targets) are i32 or i64 (`idx64`).
//
// One file per op family: elementwise.cu (pointwise maps, gates, AdamW, dtype/strided copies),
// reduce.cu (sums, RMSNorm, softmax, embedding, RoPE, cross-entropy, KL), attention.cu (fused
// FlashAttention-style forward and backward), gemm.cpp (cuBLASLt).
//
// Statistics that a backward re-reads (attention and cross-entropy lse, RMSNorm rstd) are f32 for
// both dtypes. Kernels that find an index out of range (an id >= vocab, a target outside [0, V) that
// is not ignore_index) skip it and raise a device-side flag; CudaBackend turns the flag into a
// koff::Error at its next synchronisation point (see error_flag()).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

namespace koff::cuda {

enum class Dt { f32, bf16 };

// A device int set to nonzero by a kernel that met an out-of-range index; 0 when clean. One per device.
int* error_flag(int device);

// ---- elementwise.cu -------------------------------------------------------------------------
void binary(Dt dt, int kind, const void* a, const void* b, void* out, int64_t n, cudaStream_t s);
void scale(Dt dt, const void* a, float alpha, void* out, int64_t n, cudaStream_t s);
void axpy(Dt dt, void* y, const void* x, float alpha, int64_t n, cudaStream_t s);
void add_bias(Dt dt, const void* x, const void* bias, void* out, int64_t rows, int64_t cols, cudaStream_t s);
void mul_groups(Dt dt, const void* x, const void* z, void* out, int64_t rows, int64_t groups, int64_t k,
                cudaStream_t s);
void silu(Dt dt, const void* x, void* out, int64_t n, cudaStream_t s);
void silu_backward(Dt dt, const void* dy, const void* x, void* dx, int64_t n, cudaStream_t s);
void swiglu(Dt dt, const void* gate, const void* up, void* out, int64_t n, cudaStream_t s);
void swiglu_backward(Dt dt, const void* dy, const void* gate, const void* up, void* dgate, void* dup, int64_t n,
                     cudaStream_t s);
// gate/up [rows, cols], z [cols]: out = silu(gate) up z[c]; the backward writes dgate and dup only
// (z a constant; with dz see swiglu_gated_backward_dz in reduce.cu).
void swiglu_gated(Dt dt, const void* gate, const void* up, const void* z, void* out, int64_t rows, int64_t cols,
                  cudaStream_t s);
void swiglu_gated_backward(Dt dt, const void* dy, const void* gate, const void* up, const void* z, void* dgate,
                           void* dup, int64_t rows, int64_t cols, cudaStream_t s);
// span = zeta - gamma, shift = beta log(-gamma / zeta), u clamped to [eps_lo, eps_hi] (ops::HardConcrete).
struct HardConcreteConstants {
  float span, gamma, shift, beta, eps_lo, eps_hi;
};
void hard_concrete(Dt dt, int mode, const HardConcreteConstants& c, const void* log_alpha, const void* u, void* out,
                   int64_t n, cudaStream_t s);
void hard_concrete_backward(Dt dt, int mode, const HardConcreteConstants& c, const void* dout, const void* log_alpha,
                            const void* u, void* dla, int64_t n, cudaStream_t s);
struct AdamWScalars {
  float decay, beta2, one_minus_beta1, one_minus_beta2, step_size, sqrt_bias_correction2, eps;
};
void adamw(Dt dt, void* param, const void* grad, void* m, void* v, int64_t n, const AdamWScalars& c, cudaStream_t s);
// Multi-tensor AdamW over f32 tensors: one launch for a list of (param, grad, m, v, n).
struct AdamWChunk {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t n;
};
void adamw_multi(const AdamWChunk* chunks, int count, const AdamWScalars& c, cudaStream_t s);

// Strided copy with dtype conversion between f32, f64, bf16, f16, i32, i64 (dtype codes = koff::DType
// values), up to kMaxCopyDims dims (the caller checks); strides and offsets in elements.
constexpr int kMaxCopyDims = 8;
void strided_copy(void* dst, int dst_dtype, const int64_t* dst_strides, const void* src, int src_dtype,
                  const int64_t* src_strides, const int64_t* shape, int ndim, int64_t offset_dst, int64_t offset_src,
                  cudaStream_t s);

// ---- reduce.cu ------------------------------------------------------------------------------
// Reductions are deterministic: blocks write double partials to caller-provided scratch (from the
// caching allocator), a second kernel adds them in a fixed order.
constexpr int kReduceBlocks = 1024;  // scratch doubles that sum() needs
// Column reductions over [rows, cols]: rows split into column_chunks(rows) chunks; scratch is
// column_chunks(rows) * cols doubles.
inline int64_t column_chunks(int64_t rows) {
  const int64_t c = (rows + 63) / 64;
  return c < 1 ? 1 : (c > 128 ? 128 : c);
}
// out[0] = sum a (or sum a*b when b is given), double accumulation.
void sum(Dt dt, const void* a, const void* b, void* out, int64_t n, double* scratch, cudaStream_t s);
// out[c] = sum_r x[r, c]
void sum_to_last(Dt dt, const void* x, void* out, int64_t rows, int64_t cols, double* scratch, cudaStream_t s);
// dz[g] = sum_{r, j} dy[r, g, j] x[r, g, j]; scratch column_chunks(rows) * groups * k doubles.
void sum_groups_product(Dt dt, const void* dy, const void* x, void* dz, int64_t rows, int64_t groups, int64_t k,
                        double* scratch, cudaStream_t s);
// swiglu_gated_backward plus dz[c] = sum_r dy silu(gate) up, in one pass: the elementwise gradients
// are written by the column reduction's first kernel. Scratch column_chunks(rows) * cols doubles.
void swiglu_gated_backward_dz(Dt dt, const void* dy, const void* gate, const void* up, const void* z, void* dgate,
                              void* dup, void* dz, int64_t rows, int64_t cols, double* scratch, cudaStream_t s);
void rmsnorm(Dt dt, const void* x, const void* w, float eps, void* y, float* rstd, int64_t rows, int64_t d,
             cudaStream_t s);
// dw via a column reduction: scratch column_chunks(rows) * d doubles.
void rmsnorm_backward(Dt dt, const void* dy, const void* x, const void* w, const float* rstd, void* dx, void* dw,
                      int64_t rows, int64_t d, double* scratch, cudaStream_t s);
void rope(Dt dt, const void* x, const void* cos, const void* sin, bool inverse, void* out, int64_t batch, int64_t t,
          int64_t heads, int64_t head_dim, cudaStream_t s);
void softmax(Dt dt, const void* x, void* out, int64_t rows, int64_t cols, cudaStream_t s);
void softmax_backward(Dt dt, const void* dy, const void* y, void* dx, int64_t rows, int64_t cols, cudaStream_t s);
void embedding(Dt dt, const void* table, const void* ids, bool idx64, void* out, int64_t n, int64_t vocab, int64_t d,
               int* flag, cudaStream_t s);
void embedding_backward(Dt dt, const void* dy, const void* ids, bool idx64, void* dtable, int64_t n, int64_t vocab,
                        int64_t d, int* flag, cudaStream_t s);

// Cross-entropy rows, one block per row. logits x: [n, v] of `xdt` (the fused path passes its f32
// logits chunk).
// Writes lse[r] (f32) and row_loss[r] (double: lse - x[target], 0 for ignored rows).
void ce_rows(Dt xdt, const void* x, const void* targets, bool idx64, int64_t n, int64_t v, int64_t ignore_index,
             float* lse, double* row_loss, int* flag, cudaStream_t s);
// g[r, :] = dloss (softmax(x_r) - onehot), 0 for ignored rows; x and g of types xdt / gdt, may alias.
// When g2 is given, also writes the same values as bf16 into g2 (for a following bf16 GEMM).
void ce_grad(Dt xdt, const void* x, const void* targets, bool idx64, const float* lse, int64_t n, int64_t v,
             int64_t ignore_index, float dloss, Dt gdt, void* g, void* g2_bf16, cudaStream_t s);
// Number of targets != ignore_index -> *count (device int64).
void count_targets(const void* targets, bool idx64, int64_t n, int64_t ignore_index, int64_t* count, cudaStream_t s);
// out[0] (type dt) = sum of n doubles.
void sum_doubles(const double* a, int64_t n, Dt dt, void* out, cudaStream_t s);
void kl_rows(Dt dt, const void* x, const void* t, int64_t n, int64_t v, double* row_kl, cudaStream_t s);
void kl_grad(Dt dt, float dloss, const void* x, const void* t, int64_t n, int64_t v, void* g, cudaStream_t s);

// ---- attention.cu ---------------------------------------------------------------------------
struct AttentionShape {
  int64_t batch, tq, tk, heads, groups, mem, head_dim;
};
// Largest head_dim the fused kernels take.
constexpr int64_t kMaxHeadDim = 256;
// mem_gate: [B, G] f32 or null (no gate; attention.cu's header states the gated math).
void attention_forward(Dt dt, const void* q, const void* k, const void* v, const void* mem_k, const void* mem_v,
                       const float* mem_gate, void* out, float* lse, const AttentionShape& d, float scale, bool causal,
                       cudaStream_t s);
// dsum: scratch [B, Tq, H] f32. With a gate: dmem_gate [B, G] f32 and the scratch dgate_slots [B, G, m] f32
// (null without one).
void attention_backward(Dt dt, const void* dout, const void* q, const void* k, const void* v, const void* mem_k,
                        const void* mem_v, const float* mem_gate, const void* out, const float* lse, float* dsum,
                        void* dq, void* dk, void* dv, void* dmem_k, void* dmem_v, float* dmem_gate, float* dgate_slots,
                        const AttentionShape& d, float scale, bool causal, cudaStream_t s);

// ---- attention_mma.cu: the same two ops on tensor cores (WMMA), bf16 only ------------------------
// Whether a call takes the tensor-core kernels: bf16, head_dim 64 or 128, at most 64 query heads per
// KV head, every pointer in `tensors` 16-byte aligned, and KOFF_CUDA_ATTENTION not "simt" ("mma",
// "auto" or unset take them where they apply; another value is an error). Read at every call. They have
// no memory gate: the backend takes the SIMT kernels for gated calls.
bool attention_use_mma(Dt dt, const AttentionShape& d, std::initializer_list<const void*> tensors);
void attention_forward_mma(const void* q, const void* k, const void* v, const void* mem_k, const void* mem_v, void* out,
                           float* lse, const AttentionShape& d, float scale, bool causal, cudaStream_t s);
void attention_backward_mma(const void* dout, const void* q, const void* k, const void* v, const void* mem_k,
                            const void* mem_v, const void* out, const float* lse, float* dsum, void* dq, void* dk,
                            void* dv, void* dmem_k, void* dmem_v, const AttentionShape& d, float scale, bool causal,
                            cudaStream_t s);

}  // namespace koff::cuda
