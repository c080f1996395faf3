// Causal grouped-query attention with KV-memory slots (KOFF_METHOD.md section 5).
// The forward keeps only the output and the per-row log-sum-exp; the backward recomputes the
// probabilities from them (FlashAttention's trick), so no T x T tensor is ever saved.
#include "autograd/functions.h"

namespace koff::autograd {

Variable attention(const Variable& q, const Variable& k, const Variable& v, const Variable& mem_k,
                   const Variable& mem_v, double scale, bool causal) {
  Tensor tq = q.data(), tk = k.data(), tv = v.data();
  Tensor tmk = mem_k.defined() ? mem_k.data() : Tensor(), tmv = mem_v.defined() ? mem_v.data() : Tensor();
  ops::AttentionOut r = ops::attention(tq, tk, tv, tmk, tmv, scale, causal);
  std::vector<Variable> inputs = {q, k, v};
  if (mem_k.defined()) {
    inputs.push_back(mem_k);
    inputs.push_back(mem_v);
  }
  return make_result(r.out, inputs, "attention",
                     [tq, tk, tv, tmk, tmv, out = r.out, lse = r.lse, scale, causal](const Tensor& dout,
                                                                                      const std::vector<bool>& n) {
                       ops::AttentionGrads g = ops::attention_backward(dout, tq, tk, tv, tmk, tmv, out, lse, scale, causal);
                       std::vector<Tensor> grads = {g.dq, g.dk, g.dv};
                       if (n.size() > 3) {
                         grads.push_back(g.dmem_k);
                         grads.push_back(g.dmem_v);
                       }
                       return grads;
                     });
}

}  // namespace koff::autograd
