// Elementwise ops (maps, sums, activations, softmax): validation, contiguity, allocation, dispatch.
#include "engine/ops/checks.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

namespace {

Tensor binary_op(BinaryOp kind, const Tensor& a, const Tensor& b, const char* op) {
  check_float(a, op, "a");
  check_like(a, b, op, "b");
  Tensor out = empty_like(a);
  launch(a.device(), {op, bytes_of({&a, &b, &out})}, &Backend::binary, kind, a.contiguous(), b.contiguous(), out);
  return out;
}

// Runs fn on a contiguous version of t and writes the result back when t itself is a strided view,
// so in-place ops work on any view.
template <typename Fn>
void in_place(Tensor& t, Fn&& fn) {
  if (t.is_contiguous()) {
    fn(t);
    return;
  }
  Tensor tmp = t.contiguous();
  fn(tmp);
  t.copy_(tmp);
}

}  // namespace

// ---- elementwise ---------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::add, a, b, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::sub, a, b, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::mul, a, b, "mul"); }

Tensor scale(const Tensor& a, double s) {
  check_float(a, "scale", "a");
  Tensor out = empty_like(a);
  launch(a.device(), {"scale", bytes_of({&a, &out})}, &Backend::scale, a.contiguous(), s, out);
  return out;
}

void axpy_(Tensor& y, const Tensor& x, double alpha) {
  check_float(y, "axpy_", "y");
  check_like(y, x, "axpy_", "x");
  Tensor xc = x.contiguous();
  in_place(y, [&](Tensor& yc) {
    launch(yc.device(), {"axpy", bytes_of({&yc, &xc, &yc})}, &Backend::axpy, yc, xc, alpha);
  });
}

Tensor add_bias(const Tensor& x, const Tensor& bias) {
  check_float(x, "add_bias", "x");
  check_compatible(x, bias, "add_bias", "bias");
  KOFF_CHECK(x.dim() >= 1 && bias.dim() == 1 && bias.size(0) == x.size(-1),
             "add_bias: bias {} does not match the last dim of x {}", shape_str(bias.shape()), shape_str(x.shape()));
  Tensor out = empty_like(x);
  launch(x.device(), {"add_bias", bytes_of({&x, &bias, &out})}, &Backend::add_bias, x.contiguous(), bias.contiguous(),
         out);
  return out;
}

Tensor sum_to_last(const Tensor& x) {
  check_float(x, "sum_to_last", "x");
  KOFF_CHECK(x.dim() >= 1, "sum_to_last: x must have at least 1 dim, got shape {}", shape_str(x.shape()));
  Tensor out = empty_like(x, {x.size(-1)});
  launch(x.device(), {"sum_to_last", bytes_of({&x, &out})}, &Backend::sum_to_last, x.contiguous(), out);
  return out;
}

Tensor sum(const Tensor& x) {
  check_float(x, "sum", "x");
  Tensor out = empty_like(x, {});
  launch(x.device(), {"sum", bytes_of({&x, &out})}, &Backend::sum, x.contiguous(), out);
  return out;
}

Tensor dot(const Tensor& a, const Tensor& b) {
  check_float(a, "dot", "a");
  check_like(a, b, "dot", "b");
  Tensor out = empty_like(a, {});
  launch(a.device(), {"dot", bytes_of({&a, &b, &out})}, &Backend::dot, a.contiguous(), b.contiguous(), out);
  return out;
}

// ---- activations ---------------------------------------------------------------------------

Tensor silu(const Tensor& x) {
  check_float(x, "silu", "x");
  Tensor out = empty_like(x);
  launch(x.device(), {"silu", bytes_of({&x, &out})}, &Backend::silu, x.contiguous(), out);
  return out;
}

Tensor silu_backward(const Tensor& dy, const Tensor& x) {
  check_float(x, "silu_backward", "x");
  check_like(x, dy, "silu_backward", "dy");
  Tensor dx = empty_like(x);
  launch(x.device(), {"silu_backward", bytes_of({&dy, &x, &dx})}, &Backend::silu_backward, dy.contiguous(),
         x.contiguous(), dx);
  return dx;
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check_float(gate, "swiglu", "gate");
  check_like(gate, up, "swiglu", "up");
  Tensor out = empty_like(gate);
  launch(gate.device(), {"swiglu", bytes_of({&gate, &up, &out})}, &Backend::swiglu, gate.contiguous(), up.contiguous(),
         out);
  return out;
}

SwigluGrads swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_float(gate, "swiglu_backward", "gate");
  check_like(gate, up, "swiglu_backward", "up");
  check_like(gate, dy, "swiglu_backward", "dy");
  SwigluGrads g{empty_like(gate), empty_like(gate)};
  launch(gate.device(), {"swiglu_backward", bytes_of({&dy, &gate, &up, &g.dgate, &g.dup})}, &Backend::swiglu_backward,
         dy.contiguous(), gate.contiguous(), up.contiguous(), g.dgate, g.dup);
  return g;
}

Tensor softmax(const Tensor& x) {
  check_float(x, "softmax", "x");
  KOFF_CHECK(x.dim() >= 1, "softmax: x must have at least 1 dim, got shape {}", shape_str(x.shape()));
  Tensor out = empty_like(x);
  launch(x.device(), {"softmax", bytes_of({&x, &out})}, &Backend::softmax, x.contiguous(), out);
  return out;
}

Tensor softmax_backward(const Tensor& dy, const Tensor& y) {
  check_float(y, "softmax_backward", "y");
  check_like(y, dy, "softmax_backward", "dy");
  KOFF_CHECK(y.dim() >= 1, "softmax_backward: y must have at least 1 dim, got shape {}", shape_str(y.shape()));
  Tensor dx = empty_like(y);
  launch(y.device(), {"softmax_backward", bytes_of({&dy, &y, &dx})}, &Backend::softmax_backward, dy.contiguous(),
         y.contiguous(), dx);
  return dx;
}

}  // namespace koff::ops
