// GEMM on the CPU through OpenBLAS (cblas_sgemm / cblas_dgemm), row-major.
//
//   C[b] = alpha * op(A[b]) op(B[b or 0]) + beta * C[b],  b in [0, batch)
//
// A is stored [batch, M, K] (or [batch, K, M] when trans_a), B [batch_b, K, N] (or [batch_b, N, K]
// when trans_b) with batch_b = 1 when b_shared, C [batch, M, N]; all contiguous. A shared B with an
// untransposed A is folded into one call with M' = batch * M, which is what lets OpenBLAS use all
// cores on the [B*T, d] x [d, out] shapes of a linear layer. beta = 0 never reads C (it may hold
// garbage); k = 0 gives beta * C.
#pragma once

#include <cstdint>

namespace koff::cpu {

// True when OpenBLAS's float GEMM gives the same bits on 1 thread as on omp_get_max_threads() (checked
// once, on a few shapes, a millisecond). engine/cpu/threads.h changes the thread count only then.
bool blas_same_bits_on_any_thread_count();

template <typename T>
void gemm(const T* a, const T* b, T* c, int64_t batch, int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b,
          bool b_shared, T alpha = T(1), T beta = T(0));

}  // namespace koff::cpu
