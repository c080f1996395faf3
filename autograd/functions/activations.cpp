// SiLU, SwiGLU and softmax.
//   silu(x) = x*sigmoid(x),        silu'(x) = sigmoid(x) * (1 + x*(1 - sigmoid(x)))
//   swiglu(g, u) = silu(g) * u:    dg = dy * u * silu'(g),  du = dy * silu(g)
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

Variable softmax(const Variable& x) {
  Tensor y = ops::softmax(x.data());
  return make_result(y, {x}, "softmax", [y](const Tensor& dy, const std::vector<bool>&) {
    return Grads{ops::softmax_backward(dy, y)};
  });
}

}  // namespace koff::autograd
