// Causal grouped-query attention with KV-memory slots (KOFF_METHOD.md section 5), optionally gated.
// The forward keeps only the output and the per-row log-sum-exp; the backward recomputes the
// probabilities from them (FlashAttention's trick), so no T x T tensor is ever saved.
#include "autograd/functions.h"

namespace koff::autograd {

Variable attention(const Variable& q, const Variable& k, const Variable& v, const Variable& mem_k,
                   const Variable& mem_v, double scale, bool causal, const Variable& mem_gate) {
  Tensor tq = q.data(), tk = k.data(), tv = v.data();
  Tensor tmk = mem_k.defined() ? mem_k.data() : Tensor(), tmv = mem_v.defined() ? mem_v.data() : Tensor();
  Tensor tg = mem_gate.defined() ? mem_gate.data() : Tensor();
  ops::AttentionOut r = ops::attention(tq, tk, tv, tmk, tmv, scale, causal, tg);
  std::vector<Variable> inputs = {q, k, v};
  if (mem_k.defined()) {
    inputs.push_back(mem_k);
    inputs.push_back(mem_v);
  }
  if (mem_gate.defined()) inputs.push_back(mem_gate);
  return make_result(r.out, inputs, "attention",
                     [tq, tk, tv, tmk, tmv, tg, out = r.out, lse = r.lse, scale, causal](const Tensor& dout,
                                                                                         const std::vector<bool>&) {
                       ops::AttentionGrads g =
                           ops::attention_backward(dout, tq, tk, tv, tmk, tmv, out, lse, scale, causal, tg);
                       std::vector<Tensor> grads = {g.dq, g.dk, g.dv};
                       if (tmk.defined()) {
                         grads.push_back(g.dmem_k);
                         grads.push_back(g.dmem_v);
                       }
                       if (tg.defined()) grads.push_back(g.dmem_gate);
                       return grads;
                     });
}

}  // namespace koff::autograd
