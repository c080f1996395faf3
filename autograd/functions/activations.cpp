// SiLU, SwiGLU and softmax.
//   silu(x) = x*sigmoid(x),        silu'(x) = sigmoid(x) * (1 + x*(1 - sigmoid(x)))
//   swiglu(g, u) = silu(g) * u:    dg = dy * u * silu'(g),  du = dy * silu(g)
//   swiglu_gated(g, u, z) = silu(g) * u * z[f]:
//                                  dg = dy * z * u * silu'(g),  du = dy * z * silu(g),
//                                  dz[f] = sum over rows of dy * silu(g) * u
//   y = softmax(x):                dx = y * (dy - sum(dy*y))
#include "autograd/functions.h"

namespace koff::autograd {

using Grads = std::vector<Tensor>;

Variable silu(const Variable& x) {
  Tensor tx = x.data();
  return make_result(ops::silu(tx), {x}, "silu", [tx](const Tensor& dy, const std::vector<bool>&) {
    return Grads{ops::silu_backward(dy, tx)};
  });
}

Variable swiglu(const Variable& gate, const Variable& up) {
  Tensor tg = gate.data(), tu = up.data();
  return make_result(ops::swiglu(tg, tu), {gate, up}, "swiglu", [tg, tu](const Tensor& dy, const std::vector<bool>& n) {
    ops::SwigluGrads g = ops::swiglu_backward(dy, tg, tu);
    return Grads{n[0] ? g.dgate : Tensor(), n[1] ? g.dup : Tensor()};
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

Variable softmax(const Variable& x) {
  Tensor y = ops::softmax(x.data());
  return make_result(y, {x}, "softmax", [y](const Tensor& dy, const std::vector<bool>&) {
    return Grads{ops::softmax_backward(dy, y)};
  });
}

}  // namespace koff::autograd
