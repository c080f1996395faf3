// Matrix products and the linear layer, with their gradients.
//
// A frozen operand (requires_grad false) gets no gradient and its gradient GEMM is skipped: for a
// frozen base model this halves the backward GEMM work (only activation gradients are computed).
#include "autograd/functions.h"

namespace koff::autograd {

using Grads = std::vector<Tensor>;

namespace {

// Reduces a broadcast 2-D operand's gradient [..., R, C] over the batch dims to [R, C].
Tensor sum_batches(const Tensor& g, int64_t rows, int64_t cols) {
  if (g.dim() == 2) return g;
  Tensor flat = g.reshape({-1, rows * cols});
  return ops::sum_to_last(flat).view({rows, cols});
}

}  // namespace

Variable matmul(const Variable& a, const Variable& b, bool trans_a, bool trans_b) {
  // C = op(A) op(B).  With op = identity:  dA = dC B^T,  dB = A^T dC.
  // Transposed operands swap the roles: if trans_a, dA = B dC^T (stored as A is, [K, M]), etc.
  Tensor ta = a.data(), tb = b.data();
  Tensor c = ops::matmul(ta, tb, trans_a, trans_b);
  return make_result(c, {a, b}, "matmul", [ta, tb, trans_a, trans_b](const Tensor& dc, const std::vector<bool>& n) {
    Tensor da, db;
    const bool b_shared = tb.dim() == 2 && ta.dim() > 2;
    if (n[0]) {
      // dA = dC op(B)^T, or its transpose when A was used transposed.
      if (!trans_a)
        da = ops::matmul(dc, tb, false, !trans_b);
      else if (b_shared)
        da = ops::matmul(dc, tb, false, !trans_b).transpose(-2, -1).contiguous();
      else
        da = ops::matmul(tb, dc, trans_b, true);
    }
    if (n[1]) {
      if (b_shared && !trans_a) {
        // B was shared by every batch of A: fold the batches into rows, dB = A2^T dC2 in one GEMM.
        Tensor a2 = ta.reshape({-1, ta.size(-1)}), dc2 = dc.reshape({-1, dc.size(-1)});
        db = trans_b ? ops::matmul(dc2, a2, true, false) : ops::matmul(a2, dc2, true, false);
      } else if (b_shared) {
        db = sum_batches(trans_b ? ops::matmul(dc, ta, true, true) : ops::matmul(ta, dc), tb.size(0), tb.size(1));
      } else {
        db = trans_b ? ops::matmul(dc, ta, true, trans_a) : ops::matmul(ta, dc, !trans_a, false);
      }
    }
    return Grads{da, db};
  });
}

Variable linear(const Variable& x, const Variable& w, const Variable& bias) {
  // y = x W^T + b;  dx = dy W,  dW = dy^T x (rows folded),  db = sum of dy over rows.
  Tensor tx = x.data(), tw = w.data();
  Tensor y = ops::linear(tx, tw, bias.defined() ? bias.data() : Tensor());
  std::vector<Variable> inputs = {x, w};
  if (bias.defined()) inputs.push_back(bias);
  return make_result(y, inputs, "linear", [tx, tw](const Tensor& dy, const std::vector<bool>& n) {
    Grads g(n.size());
    Tensor dy2 = dy.reshape({-1, dy.size(-1)});
    if (n[0]) g[0] = ops::matmul(dy, tw);
    if (n[1]) g[1] = ops::matmul(dy2, tx.reshape({-1, tx.size(-1)}), true, false);
    if (n.size() > 2 && n[2]) g[2] = ops::sum_to_last(dy2);
    return g;
  });
}

}  // namespace koff::autograd
