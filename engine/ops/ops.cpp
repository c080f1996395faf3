// Elementwise, matmul, embedding, RMSNorm and activation ops: validation, contiguity, allocation,
// dispatch. (RoPE, attention, cross-entropy, gates and the optimizer live in their own files.)
#include "engine/ops/ops.h"

#include "engine/ops/backend.h"
#include "engine/ops/checks.h"

namespace koff::ops {

using namespace detail;

namespace {

Tensor binary_op(int kind, const Tensor& a, const Tensor& b, const char* op) {
  check_float(a, op, "a");
  check_like(a, b, op, "b");
  Tensor out = empty_like(a);
  backend_of(a).binary(kind, a.contiguous(), b.contiguous(), out);
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

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(0, a, b, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(1, a, b, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(2, a, b, "mul"); }

Tensor scale(const Tensor& a, double s) {
  check_float(a, "scale", "a");
  Tensor out = empty_like(a);
  backend_of(a).scale(a.contiguous(), s, out);
  return out;
}

void axpy_(Tensor& y, const Tensor& x, double alpha) {
  check_float(y, "axpy_", "y");
  check_like(y, x, "axpy_", "x");
  Tensor xc = x.contiguous();
  in_place(y, [&](Tensor& yc) { backend_of(yc).axpy(yc, xc, alpha); });
}

Tensor add_bias(const Tensor& x, const Tensor& bias) {
  check_float(x, "add_bias", "x");
  check_compatible(x, bias, "add_bias", "bias");
  KOFF_CHECK(x.dim() >= 1 && bias.dim() == 1 && bias.size(0) == x.size(-1),
             "add_bias: bias {} does not match the last dim of x {}", shape_str(bias.shape()), shape_str(x.shape()));
  Tensor out = empty_like(x);
  backend_of(x).add_bias(x.contiguous(), bias.contiguous(), out);
  return out;
}

Tensor sum_to_last(const Tensor& x) {
  check_float(x, "sum_to_last", "x");
  KOFF_CHECK(x.dim() >= 1, "sum_to_last: x must have at least 1 dim, got shape {}", shape_str(x.shape()));
  Tensor out = empty_like(x, {x.size(-1)});
  backend_of(x).sum_to_last(x.contiguous(), out);
  return out;
}

Tensor sum(const Tensor& x) {
  check_float(x, "sum", "x");
  Tensor out = empty_like(x, {});
  backend_of(x).sum(x.contiguous(), out);
  return out;
}

Tensor dot(const Tensor& a, const Tensor& b) {
  check_float(a, "dot", "a");
  check_like(a, b, "dot", "b");
  Tensor out = empty_like(a, {});
  backend_of(a).dot(a.contiguous(), b.contiguous(), out);
  return out;
}

namespace {

// x viewed as [rows, groups, k]: some trailing dims of x must multiply to exactly groups * k, so that
// the gate dim is a real dim boundary (a head gate cannot silently straddle two heads).
int64_t group_rows(const Tensor& x, int64_t groups, int64_t k, const char* op) {
  KOFF_CHECK(groups >= 1 && k >= 1, "{}: groups ({}) and k ({}) must be positive", op, groups, k);
  int64_t suffix = 1;
  bool boundary = (groups * k == 1);
  for (int64_t d = x.dim() - 1; d >= 0 && !boundary; --d) {
    suffix *= x.size(d);
    boundary = suffix == groups * k;
  }
  KOFF_CHECK(boundary, "{}: x of shape {} has no trailing dims of size groups*k = {}*{}", op, shape_str(x.shape()),
             groups, k);
  return x.numel() / (groups * k);
}

}  // namespace

Tensor mul_groups(const Tensor& x, const Tensor& z, int64_t k) {
  check_float(x, "mul_groups", "x");
  check_compatible(x, z, "mul_groups", "z");
  KOFF_CHECK(z.dim() == 1, "mul_groups: z must be 1-D [G], got shape {}", shape_str(z.shape()));
  const int64_t rows = group_rows(x, z.size(0), k, "mul_groups");
  Tensor out = empty_like(x);
  backend_of(x).mul_groups(x.contiguous(), z.contiguous(), rows, z.size(0), k, out);
  return out;
}

Tensor sum_groups_product(const Tensor& dy, const Tensor& x, int64_t groups, int64_t k) {
  check_float(x, "sum_groups_product", "x");
  check_like(x, dy, "sum_groups_product", "dy");
  const int64_t rows = group_rows(x, groups, k, "sum_groups_product");
  Tensor dz = empty_like(x, {groups});
  backend_of(x).sum_groups_product(dy.contiguous(), x.contiguous(), rows, groups, k, dz);
  return dz;
}

// ---- matmul --------------------------------------------------------------------------------

namespace {

// A GEMM operand: a contiguous tensor plus whether its last two dims are stored swapped. A
// transposed view of a contiguous tensor is passed as that tensor with the flag flipped, no copy.
struct GemmOperand {
  Tensor t;
  bool trans;
};

GemmOperand gemm_operand(const Tensor& x, bool trans) {
  if (x.is_contiguous()) return {x, trans};
  Tensor xt = x.transpose(-2, -1);
  if (xt.is_contiguous()) return {xt, !trans};
  return {x.contiguous(), trans};
}

void count_gemm(int64_t batch, int64_t m, int64_t n, int64_t k, int64_t calls = 1) {
  op_counters().gemm += calls;
  op_counters().gemm_flops += 2 * batch * m * n * k;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  check_float(a, "matmul", "a");
  check_compatible(a, b, "matmul", "b");
  KOFF_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: both operands need at least 2 dims, got {} and {}",
             shape_str(a.shape()), shape_str(b.shape()));
  const int64_t m = trans_a ? a.size(-1) : a.size(-2), ka = trans_a ? a.size(-2) : a.size(-1);
  const int64_t kb = trans_b ? b.size(-1) : b.size(-2), n = trans_b ? b.size(-2) : b.size(-1);
  KOFF_CHECK(ka == kb, "matmul: inner dims differ, a {}{} vs b {}{}", shape_str(a.shape()), trans_a ? "^T" : "",
             shape_str(b.shape()), trans_b ? "^T" : "");
  const Shape lead(a.shape().begin(), a.shape().end() - 2);
  const bool b_shared = b.dim() == 2;
  if (!b_shared) {
    const Shape lead_b(b.shape().begin(), b.shape().end() - 2);
    KOFF_CHECK(lead == lead_b, "matmul: batch dims differ, a {} vs b {} (b may also be 2-D and shared)",
               shape_str(a.shape()), shape_str(b.shape()));
  }
  const int64_t batch = shape_numel(lead);
  Shape out_shape = lead;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor c = empty_like(a, out_shape);
  GemmOperand ga = gemm_operand(a, trans_a), gb = gemm_operand(b, trans_b);
  backend_of(a).gemm(ga.t, gb.t, c, batch, m, n, ka, ga.trans, gb.trans, b_shared);
  count_gemm(batch, m, n, ka);
  return c;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_float(x, "linear", "x");
  check_compatible(x, w, "linear", "w");
  KOFF_CHECK(x.dim() >= 1 && w.dim() == 2 && w.size(1) == x.size(-1),
             "linear: x {} does not match weight {} (expected [out, {}])", shape_str(x.shape()), shape_str(w.shape()),
             x.dim() >= 1 ? x.size(-1) : 0);
  const int64_t in = w.size(1), out_features = w.size(0);
  const int64_t rows = in ? x.numel() / in : shape_numel(leading(x.shape()));
  Shape out_shape = leading(x.shape());
  out_shape.push_back(out_features);
  if (bias.defined()) {
    check_compatible(x, bias, "linear", "bias");
    KOFF_CHECK(bias.dim() == 1 && bias.size(0) == out_features, "linear: bias {} does not match weight {}",
               shape_str(bias.shape()), shape_str(w.shape()));
  }
  Tensor y = empty_like(x, out_shape);
  GemmOperand gw = gemm_operand(w, true);
  Backend& backend = backend_of(x);
  if (gw.trans) {  // W stored [out, in]: the backend's linear, which may fuse the bias into the GEMM
    Tensor y2 = y.view({rows, out_features});
    backend.linear(x.contiguous().reshape({rows, in}), gw.t, bias.defined() ? bias.contiguous() : Tensor(), y2);
  } else {  // W a transposed view of a contiguous [in, out]: a plain GEMM on it, no copy, then the bias
    backend.gemm(x.contiguous(), gw.t, y, 1, rows, out_features, in, false, false, true);
    if (bias.defined()) backend.add_bias(y, bias.contiguous(), y);
  }
  count_gemm(1, rows, out_features, in);
  return y;
}

// ---- embedding -----------------------------------------------------------------------------

Tensor embedding(const Tensor& table, const Tensor& ids) {
  check_float(table, "embedding", "table");
  check_index(ids, "embedding", "ids");
  check_same_device(table, ids, "embedding");
  check_dim(table, 2, "embedding", "table");
  Shape out_shape = ids.shape();
  out_shape.push_back(table.size(1));
  Tensor out = empty_like(table, out_shape);
  backend_of(table).embedding(table.contiguous(), ids.contiguous(), out);
  return out;
}

Tensor embedding_backward(const Tensor& dy, const Tensor& ids, int64_t vocab) {
  check_float(dy, "embedding_backward", "dy");
  check_index(ids, "embedding_backward", "ids");
  check_same_device(dy, ids, "embedding_backward");
  KOFF_CHECK(dy.dim() == ids.dim() + 1 && leading(dy.shape()) == ids.shape(),
             "embedding_backward: dy {} does not match ids {} (expected ids shape + [d])", shape_str(dy.shape()),
             shape_str(ids.shape()));
  KOFF_CHECK(vocab >= 0, "embedding_backward: negative vocab {}", vocab);
  Tensor dtable = Tensor::zeros({vocab, dy.size(-1)}, dy.dtype(), dy.device());
  backend_of(dy).embedding_backward(dy.contiguous(), ids.contiguous(), dtable);
  return dtable;
}

// ---- RMSNorm -------------------------------------------------------------------------------

namespace {
void check_norm_weight(const Tensor& x, const Tensor& w, const char* op) {
  check_compatible(x, w, op, "w");
  KOFF_CHECK(x.dim() >= 1 && w.dim() == 1 && w.size(0) == x.size(-1), "{}: weight {} does not match x {}", op,
             shape_str(w.shape()), shape_str(x.shape()));
}
}  // namespace

RmsNormOut rmsnorm(const Tensor& x, const Tensor& w, double eps) {
  check_float(x, "rmsnorm", "x");
  check_norm_weight(x, w, "rmsnorm");
  RmsNormOut r{empty_like(x), empty_stat(x, leading(x.shape()))};
  backend_of(x).rmsnorm(x.contiguous(), w.contiguous(), eps, r.y, r.rstd);
  return r;
}

RmsNormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd) {
  check_float(x, "rmsnorm_backward", "x");
  check_norm_weight(x, w, "rmsnorm_backward");
  check_like(x, dy, "rmsnorm_backward", "dy");
  check_stat(x, rstd, "rmsnorm_backward", "rstd");
  KOFF_CHECK(rstd.shape() == leading(x.shape()), "rmsnorm_backward: rstd {} does not match x {}",
             shape_str(rstd.shape()), shape_str(x.shape()));
  RmsNormGrads g{empty_like(x), empty_like(w)};
  backend_of(x).rmsnorm_backward(dy.contiguous(), x.contiguous(), w.contiguous(), rstd.contiguous(), g.dx, g.dw);
  return g;
}

// ---- activations ---------------------------------------------------------------------------

Tensor silu(const Tensor& x) {
  check_float(x, "silu", "x");
  Tensor out = empty_like(x);
  backend_of(x).silu(x.contiguous(), out);
  return out;
}

Tensor silu_backward(const Tensor& dy, const Tensor& x) {
  check_float(x, "silu_backward", "x");
  check_like(x, dy, "silu_backward", "dy");
  Tensor dx = empty_like(x);
  backend_of(x).silu_backward(dy.contiguous(), x.contiguous(), dx);
  return dx;
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check_float(gate, "swiglu", "gate");
  check_like(gate, up, "swiglu", "up");
  Tensor out = empty_like(gate);
  backend_of(gate).swiglu(gate.contiguous(), up.contiguous(), out);
  return out;
}

SwigluGrads swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_float(gate, "swiglu_backward", "gate");
  check_like(gate, up, "swiglu_backward", "up");
  check_like(gate, dy, "swiglu_backward", "dy");
  SwigluGrads g{empty_like(gate), empty_like(gate)};
  backend_of(gate).swiglu_backward(dy.contiguous(), gate.contiguous(), up.contiguous(), g.dgate, g.dup);
  return g;
}

namespace {
// z [F] gates the last dim of gate [..., F].
void check_neuron_gate(const Tensor& gate, const Tensor& z, const char* op) {
  check_compatible(gate, z, op, "z");
  KOFF_CHECK(gate.dim() >= 1 && z.dim() == 1 && z.size(0) == gate.size(-1),
             "{}: z {} does not match the last dim of gate {} (expected [F])", op, shape_str(z.shape()),
             shape_str(gate.shape()));
}
}  // namespace

Tensor swiglu_gated(const Tensor& gate, const Tensor& up, const Tensor& z) {
  check_float(gate, "swiglu_gated", "gate");
  check_like(gate, up, "swiglu_gated", "up");
  check_neuron_gate(gate, z, "swiglu_gated");
  Tensor out = empty_like(gate);
  backend_of(gate).swiglu_gated(gate.contiguous(), up.contiguous(), z.contiguous(), out);
  return out;
}

SwigluGatedGrads swiglu_gated_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z,
                                       bool want_dz) {
  check_float(gate, "swiglu_gated_backward", "gate");
  check_like(gate, up, "swiglu_gated_backward", "up");
  check_like(gate, dy, "swiglu_gated_backward", "dy");
  check_neuron_gate(gate, z, "swiglu_gated_backward");
  SwigluGatedGrads g{empty_like(gate), empty_like(gate), want_dz ? empty_like(z) : Tensor()};
  backend_of(gate).swiglu_gated_backward(dy.contiguous(), gate.contiguous(), up.contiguous(), z.contiguous(), g.dgate,
                                         g.dup, g.dz);
  return g;
}

Tensor softmax(const Tensor& x) {
  check_float(x, "softmax", "x");
  KOFF_CHECK(x.dim() >= 1, "softmax: x must have at least 1 dim, got shape {}", shape_str(x.shape()));
  Tensor out = empty_like(x);
  backend_of(x).softmax(x.contiguous(), out);
  return out;
}

Tensor softmax_backward(const Tensor& dy, const Tensor& y) {
  check_float(y, "softmax_backward", "y");
  check_like(y, dy, "softmax_backward", "dy");
  KOFF_CHECK(y.dim() >= 1, "softmax_backward: y must have at least 1 dim, got shape {}", shape_str(y.shape()));
  Tensor dx = empty_like(y);
  backend_of(y).softmax_backward(dy.contiguous(), y.contiguous(), dx);
  return dx;
}

}  // namespace koff::ops
