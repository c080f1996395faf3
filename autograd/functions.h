// The differentiable functions of the engine. Each family's forward and backward are written side by
// side in autograd/functions/<family>.cpp (the PyTorch derivatives.yaml idea, in code).
#pragma once

#include "autograd/variable.h"
#include "engine/ops/ops.h"

namespace koff::autograd {

// elementwise.cpp
Variable add(const Variable& a, const Variable& b);
Variable sub(const Variable& a, const Variable& b);
Variable mul(const Variable& a, const Variable& b);
Variable scale(const Variable& a, double s);
Variable add_bias(const Variable& x, const Variable& bias);
Variable sum(const Variable& x);                     // -> []
Variable dot(const Variable& a, const Variable& b);  // sum(a*b) -> []
Variable reshape(const Variable& x, const Shape& shape);
// x in another dtype (mixed precision: f32 master trainables cast to the bf16 compute dtype); the
// gradient is cast back. Returns x itself when the dtype is already `dtype`.
Variable cast(const Variable& x, DType dtype);
Variable silu(const Variable& x);
Variable swiglu(const Variable& gate, const Variable& up);
Variable softmax(const Variable& x);

// gemm.cpp
Variable matmul(const Variable& a, const Variable& b, bool trans_a = false, bool trans_b = false);
Variable linear(const Variable& x, const Variable& w, const Variable& bias = {});
// A projection with per-domain LoRA, in one node (see gemm.cpp):
//   y = x W^T + b;  y[rows of group g] += scale (x_g A_d^T) B_d^T,  d = g's domain,
// x [B, T, in] (or [B, in]); a_table [D, rank * in] (row d: A_d [rank, in]); b_table [D, out * rank]
// (row d: B_d [out, rank]); groups: runs of consecutive SEQUENCES (first dim of x) of one domain,
// covering all of them in order. The tables may be in another dtype than x (f32 trainables under
// bf16 compute): they are cast for the product and their gradients cast back.
struct LoraGroup {
  int64_t begin, end, domain;  // sequences [begin, end)
};
Variable linear_lora(const Variable& x, const Variable& w, const Variable& bias, const Variable& a_table,
                     const Variable& b_table, const std::vector<LoraGroup>& groups, int64_t rank, double scale);
// The runs of equal consecutive domain ids: the groups of linear_lora.
std::vector<LoraGroup> lora_groups(const std::vector<int64_t>& domain_of_sequence);

// embedding.cpp
Variable embedding(const Variable& table, const Tensor& ids);

// norm.cpp
Variable rmsnorm(const Variable& x, const Variable& w, double eps);

// rope.cpp
Variable rope(const Variable& x, const ops::RopeTables& tables);

// attention.cpp: q [B,T,H,hd], k/v [B,T,G,hd], mem_k/mem_v [B,m,G,hd] or undefined; mem_gate [B,G] or
// undefined: the memory's attention mass per (sequence, KV head), see ops::attention.
Variable attention(const Variable& q, const Variable& k, const Variable& v, const Variable& mem_k,
                   const Variable& mem_v, double scale, bool causal = true, const Variable& mem_gate = {});

// loss.cpp: the SUM of token losses divided by `normaliser` (the true token count of the accumulated
// batch; <= 0 means this call's own count). Returns a [] variable.
Variable cross_entropy(const Variable& logits, const Tensor& targets, double normaliser = 0,
                       int64_t ignore_index = ops::kIgnoreIndex);
// KL(softmax(teacher) || softmax(logits)) summed over rows / normaliser (> 0): distillation from a
// fixed teacher (no gradient to the teacher).
Variable kl_div(const Variable& logits, const Tensor& teacher_logits, double normaliser);
Variable linear_cross_entropy(const Variable& h, const Variable& w, const Tensor& targets, double normaliser = 0,
                              int64_t chunk = 256, int64_t ignore_index = ops::kIgnoreIndex);

// gates.cpp: group gates, the gated SwiGLU, and hard-concrete gates (KOFF_METHOD.md section 3); u is
// the step's uniform draw.
Variable mul_groups(const Variable& x, const Variable& z, int64_t k);                // see ops::mul_groups
Variable swiglu_gated(const Variable& gate, const Variable& up, const Variable& z);  // see ops::swiglu_gated
Variable hard_concrete_sample(const Variable& log_alpha, const Tensor& u);
Variable hard_concrete_p_open(const Variable& log_alpha);

}  // namespace koff::autograd
