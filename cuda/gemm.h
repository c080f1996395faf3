// GEMM through cuBLASLt, in the engine's row-major terms.
//
//   C[i] = alpha op(A[i]) op(B[i]) + beta C[i],  i < batch
//
// A stored row-major [M, K] (or [K, M] when trans_a) with leading dimension lda, B [K, N] (or [N, K]
// when trans_b) with ldb, C [M, N] with ldc; batch strides in elements, 0 for an operand shared by
// every batch. f32 runs CUBLAS_COMPUTE_32F (no TF32: the op harness holds f32 to 1e-5); bf16 A/B run
// with f32 accumulation and write C as bf16 or f32 (`c_dt`). Row-major C = A B is column-major
// C^T = B^T A^T, so the call swaps the operands; no data moves.
//
// One cuBLASLt handle and one 32 MiB workspace per device; the descriptors, layouts and the
// heuristic's algorithm are cached per shape/stride/alignment/epilogue key, so a training step's GEMMs
// query the heuristic once each.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/dtype.h"

namespace koff::cuda {

struct GemmArgs {
  Dt ab_dt = Dt::f32, c_dt = Dt::f32;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  float alpha = 1.0f, beta = 0.0f;
};

// With `bias` (c_dt elements, [N]), C[i][m, n] = ... + bias[n] on every row, through cuBLASLt's bias
// epilogue: in the column-major view C^T [N, M] the bias runs down its N rows and is broadcast over
// its M columns, which is what EPILOGUE_BIAS does ("length = rows of D, broadcast to all columns").
void gemm(const GemmArgs& g, const void* a, const void* b, void* c, int device, cudaStream_t stream,
          const void* bias = nullptr);

}  // namespace koff::cuda
