// Elementwise arithmetic, reductions, activations and softmax, with their gradients (and reshape
// and cast, which move no values).
//   silu(x) = x*sigmoid(x),        silu'(x) = sigmoid(x) * (1 + x*(1 - sigmoid(x)))
//   swiglu(g, u) = silu(g) * u:    dg = dy * u * silu'(g),  du = dy * silu(g)
//   y = softmax(x):                dx = y * (dy - sum(dy*y))
#include "autograd/functions.h"

namespace koff::autograd {

using Grads = std::vector<Tensor>;

Variable add(const Variable& a, const Variable& b) {
  // d(a+b) = (dy, dy)
  return make_result(ops::add(a.data(), b.data()), {a, b}, "add", [](const Tensor& dy, const std::vector<bool>&) {
    return Grads{dy, dy};
  });
}

Variable sub(const Variable& a, const Variable& b) {
  // d(a-b) = (dy, -dy)
  return make_result(ops::sub(a.data(), b.data()), {a, b}, "sub", [](const Tensor& dy, const std::vector<bool>& n) {
    return Grads{dy, n[1] ? ops::scale(dy, -1.0) : Tensor()};
  });
}

Variable mul(const Variable& a, const Variable& b) {
  // d(a*b) = (dy*b, dy*a)
  Tensor ta = a.data(), tb = b.data();
  return make_result(ops::mul(ta, tb), {a, b}, "mul", [ta, tb](const Tensor& dy, const std::vector<bool>& n) {
    return Grads{n[0] ? ops::mul(dy, tb) : Tensor(), n[1] ? ops::mul(dy, ta) : Tensor()};
  });
}

Variable scale(const Variable& a, double s) {
  return make_result(ops::scale(a.data(), s), {a}, "scale",
                     [s](const Tensor& dy, const std::vector<bool>&) { return Grads{ops::scale(dy, s)}; });
}

Variable add_bias(const Variable& x, const Variable& bias) {
  // y = x + b (b broadcast over rows): dx = dy, db = sum of dy over rows
  return make_result(ops::add_bias(x.data(), bias.data()), {x, bias}, "add_bias",
                     [](const Tensor& dy, const std::vector<bool>& n) {
                       return Grads{dy, n[1] ? ops::sum_to_last(dy) : Tensor()};
                     });
}

Variable sum(const Variable& x) {
  Shape shape = x.shape();
  return make_result(ops::sum(x.data()), {x}, "sum", [shape](const Tensor& dy, const std::vector<bool>&) {
    return Grads{Tensor::full(shape, dy.item(), dy.dtype(), dy.device())};
  });
}

Variable dot(const Variable& a, const Variable& b) {
  // d sum(a*b) = (g*b, g*a)
  Tensor ta = a.data(), tb = b.data();
  return make_result(ops::dot(ta, tb), {a, b}, "dot", [ta, tb](const Tensor& dy, const std::vector<bool>& n) {
    double g = dy.item();
    return Grads{n[0] ? ops::scale(tb, g) : Tensor(), n[1] ? ops::scale(ta, g) : Tensor()};
  });
}

Variable reshape(const Variable& x, const Shape& shape) {
  Shape original = x.shape();
  return make_result(x.data().reshape(shape), {x}, "reshape",
                     [original](const Tensor& dy, const std::vector<bool>&) { return Grads{dy.reshape(original)}; });
}

Variable cast(const Variable& x, DType dtype) {
  if (!x.defined() || x.dtype() == dtype) return x;
  const DType original = x.dtype();
  return make_result(x.data().to(dtype), {x}, "cast",
                     [original](const Tensor& dy, const std::vector<bool>&) { return Grads{dy.to(original)}; });
}

Variable silu(const Variable& x) {
  Tensor tx = x.data();
  return make_result(ops::silu(tx), {x}, "silu",
                     [tx](const Tensor& dy, const std::vector<bool>&) { return Grads{ops::silu_backward(dy, tx)}; });
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
  return make_result(y, {x}, "softmax",
                     [y](const Tensor& dy, const std::vector<bool>&) { return Grads{ops::softmax_backward(dy, y)}; });
}

}  // namespace koff::autograd
