// Gates (KOFF_METHOD.md section 3): head/neuron gates applied to activations, and the hard-concrete
// distribution they are drawn from (Louizos et al. 2018).
//   mul_groups: y[r,g,k] = x[r,g,k] z[g]:  dx = dy z,  dz[g] = sum_{r,k} dy x
//   swiglu_gated(g, u, z) = silu(g) * u * z[f]:
//           dg = dy * z * u * silu'(g),  du = dy * z * silu(g),  dz[f] = sum over rows of dy * silu(g) * u
//   sample: z = clamp(s*(zeta-gamma)+gamma, 0, 1), s = sigmoid((log u - log(1-u) + log_alpha)/beta)
//           dz/dlog_alpha = (zeta-gamma) * s*(1-s)/beta inside the clamp, 0 where it is active
//   p_open = sigmoid(log_alpha - beta*log(-gamma/zeta)),  dp/dlog_alpha = p*(1-p)
#include "autograd/functions.h"

namespace koff::autograd {

using Grads = std::vector<Tensor>;

Variable mul_groups(const Variable& x, const Variable& z, int64_t k) {
  // y[r,g,k] = x[r,g,k] z[g]:  dx = dy z (the same op), dz[g] = sum_{r,k} dy x
  Tensor tx = x.data(), tz = z.data();
  return make_result(ops::mul_groups(tx, tz, k), {x, z}, "mul_groups",
                     [tx, tz, k](const Tensor& dy, const std::vector<bool>& n) {
                       return Grads{n[0] ? ops::mul_groups(dy, tz, k) : Tensor(),
                                    n[1] ? ops::sum_groups_product(dy, tx, tz.numel(), k) : Tensor()};
                     });
}

Variable swiglu_gated(const Variable& gate, const Variable& up, const Variable& z) {
  Tensor tg = gate.data(), tu = up.data(), tz = z.data();
  return make_result(
      ops::swiglu_gated(tg, tu, tz), {gate, up, z}, "swiglu_gated",
      [tg, tu, tz](const Tensor& dy, const std::vector<bool>& n) {
        if (!n[0] && !n[1]) {  // only the gate learns (frozen activations): dz alone
          return Grads{Tensor(), Tensor(), ops::sum_groups_product(dy, ops::swiglu(tg, tu), tz.numel(), 1)};
        }
        ops::SwigluGatedGrads g = ops::swiglu_gated_backward(dy, tg, tu, tz, n[2]);
        return Grads{n[0] ? g.dgate : Tensor(), n[1] ? g.dup : Tensor(), g.dz};
      });
}

Variable hard_concrete_sample(const Variable& log_alpha, const Tensor& u) {
  Tensor la = log_alpha.data();
  return make_result(ops::hard_concrete_sample(la, u), {log_alpha}, "hard_concrete_sample",
                     [la, u](const Tensor& dz, const std::vector<bool>&) {
                       return std::vector<Tensor>{ops::hard_concrete_sample_backward(dz, la, u)};
                     });
}

Variable hard_concrete_p_open(const Variable& log_alpha) {
  Tensor la = log_alpha.data();
  return make_result(ops::hard_concrete_p_open(la), {log_alpha}, "hard_concrete_p_open",
                     [la](const Tensor& dp, const std::vector<bool>&) {
                       return std::vector<Tensor>{ops::hard_concrete_p_open_backward(dp, la)};
                     });
}

}  // namespace koff::autograd
