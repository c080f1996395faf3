// Cross-entropy over logits rows, plain and fused with the lm_head GEMM.
//
// logits, dlogits [N, V]; targets [N] (int32/int64); lse [N]; h, dh [N, d]; w, dw [V, d].
// A target equal to ignore_index counts for nothing (zero loss, zero gradient row); any other target
// outside [0, V) is a koff::Error, checked before any work.
//
//   lse_r = m_r + log sum_j exp(x_rj - m_r),  m_r = max_j x_rj     (lse is written for every row)
//   loss_sum = sum over counted rows of (lse_r - x_r,target_r)      (double accumulation)
//   dlogits_rj = dloss * (exp(x_rj - lse_r) - [j == target_r])
//
// The fused form never holds [N, V]: rows go `chunk` at a time through one [chunk, V] scratch buffer,
// logits_chunk = h_chunk W^T (GEMM). Its backward recomputes that chunk, turns it into
// G = dlogits_chunk in place, then dh_chunk = G W and, when dw is given, dw += G^T h_chunk. That is
// 1 GEMM per chunk forward and 2 (3 with dw) backward, each 2 * rows * V * d flops.
#pragma once

#include <cstdint>

namespace koff::cpu {

template <typename T, typename I>
int64_t cross_entropy(const T* logits, const I* targets, int64_t n, int64_t vocab, int64_t ignore_index, T* loss_sum,
                      T* lse);
template <typename T, typename I>
void cross_entropy_backward(T dloss, const T* logits, const I* targets, const T* lse, int64_t n, int64_t vocab,
                            int64_t ignore_index, T* dlogits);

template <typename T, typename I>
int64_t linear_cross_entropy(const T* h, const T* w, const I* targets, int64_t n, int64_t vocab, int64_t d,
                             int64_t chunk, int64_t ignore_index, T* loss_sum, T* lse);
// Knowledge distillation: KL(p_teacher || p_student) summed over rows, p = softmax of each logits row;
//   kl_r = sum_j p_t,rj ((t_rj - lse(t_r)) - (x_rj - lse(x_r)))
//   dlogits_rj = dloss * (softmax(x_r)_j - p_t,rj)
template <typename T>
void kl_div(const T* logits, const T* teacher, int64_t n, int64_t vocab, T* loss_sum);
template <typename T>
void kl_div_backward(T dloss, const T* logits, const T* teacher, int64_t n, int64_t vocab, T* dlogits);

// dw may be null (frozen lm_head): then its GEMM is skipped.
template <typename T, typename I>
void linear_cross_entropy_backward(T dloss, const T* h, const T* w, const I* targets, const T* lse, int64_t n,
                                   int64_t vocab, int64_t d, int64_t chunk, int64_t ignore_index, T* dh, T* dw);

}  // namespace koff::cpu
