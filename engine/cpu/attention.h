// Causal multi-head attention with GQA and per-KV-head memory slots, FlashAttention-style on the CPU.
//
// Layouts (contiguous): q, out, dq, dout [B, Tq, H, hd]; k, v, dk, dv [B, Tk, G, hd];
// mem_k, mem_v, dmem_k, dmem_v [B, m, G, hd] (null when m = 0); lse [B, Tq, H]. Query head h reads
// KV head g = h / (H/G) (Hugging Face repeat_kv order).
//
// Query (b, i, h) attends over the key list [m memory slots of g ; real keys 0 .. n_i - 1] with
// n_i = clamp(i + Tk - Tq + 1, 0, Tk) when causal (a decode step with Tq < Tk sees the whole cache),
// n_i = Tk otherwise. With s_j = scale * q . k_j:
//
//   lse = log sum_j exp(s_j),  out = sum_j exp(s_j - lse) v_j
//
// Memory gate (optional, mem_gate [B, G], null = no gate): the m slots of (b, g) enter with their
// attention mass scaled by gate[b, g] >= 0, i.e. each memory score gets + log g:
//
//   out = (g sum_m e^{s_m} v_m + sum_t e^{s_t} v_t) / Z,  Z = g sum_m e^{s_m} + sum_t e^{s_t},  lse = log Z
//
// g = 0 hides the memory exactly (log 0 = -inf is a masked key: out and lse are those of attention
// without memory), g = 1 is the ungated op bit for bit. A negative g is outside the domain (NaN).
//
// Both kernels work on query tiles (consecutive positions of one (b, g), all H/G heads of the group
// stacked) with small OpenBLAS GEMMs against the keys the tile can see, and a vectorised softmax step
// in between; no [Tq, Tk] matrix, O(tile x (m + Tk)) scratch per thread (attention.cpp has the details).
// A row that sees no key at all gets out = 0 and lse = -inf.
//
// Backward recomputes p_j = exp(s_j - lse) from the saved lse, with D = dout . out:
//   dv_j += p_j dout,  dp_j = dout . v_j,  ds_j = p_j (dp_j - D),
//   dq += scale ds_j k_j,  dk_j += scale ds_j q
// With a gate, p_m = g e^{s_m - lse} for the slots, and (dmem_gate [B, G], written when mem_gate is given)
//   dgate[b, g] = sum over the group's query rows and slots m of e^{s_m - lse} (dp_m - D)
// which is finite at g = 0 (the ungated probabilities, not ds_m / g). Rows with lse = -inf add nothing.
// Work is split over (b, g) pairs: every query head of a group writes the same dk/dv/dmem rows, and
// owning the whole group in one task makes those sums race-free and deterministic.
#pragma once

#include <cstdint>

namespace koff::cpu {

struct AttentionDims {
  int64_t batch, tq, tk, heads, groups, mem, head_dim;
};

template <typename T>
void attention(const T* q, const T* k, const T* v, const T* mem_k, const T* mem_v, const T* mem_gate, T* out, T* lse,
               const AttentionDims& dims, T scale, bool causal);

template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* mem_k, const T* mem_v,
                        const T* mem_gate, const T* out, const T* lse, T* dq, T* dk, T* dv, T* dmem_k, T* dmem_v,
                        T* dmem_gate, const AttentionDims& dims, T scale, bool causal);

}  // namespace koff::cpu
