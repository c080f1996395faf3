// Matrix products: batched matmul with transposes and shared operands, and linear (x W^T + bias).
#include "engine/ops/checks.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

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
  launch(a.device(), {"gemm", bytes_of({&a, &b, &c}), 2.0 * double(batch) * double(m) * double(n) * double(ka)},
         &Backend::gemm, ga.t, gb.t, c, batch, m, n, ka, ga.trans, gb.trans, b_shared, 1.0, 0.0);
  count_gemm(batch, m, n, ka);
  return c;
}

namespace {
// gemm_into's checks; returns the operands as the backend takes them and the call's shape.
struct PreparedGemm {
  GemmOperand a, b;
  GemmShape shape;
};
PreparedGemm prepare_gemm_into(const Tensor& a, const Tensor& b, const Tensor& c, bool trans_a, bool trans_b,
                               double alpha, double beta, const char* op) {
  check_float(a, op, "a");
  check_compatible(a, b, op, "b");
  check_compatible(a, c, op, "c");
  KOFF_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2, "{}: 2-D operands, got {}, {}, {}", op,
             shape_str(a.shape()), shape_str(b.shape()), shape_str(c.shape()));
  KOFF_CHECK(c.is_contiguous(), "{}: the output must be contiguous, got strides {}", op, shape_str(c.strides()));
  const int64_t m = trans_a ? a.size(1) : a.size(0), ka = trans_a ? a.size(0) : a.size(1);
  const int64_t kb = trans_b ? b.size(1) : b.size(0), n = trans_b ? b.size(0) : b.size(1);
  KOFF_CHECK(ka == kb && c.size(0) == m && c.size(1) == n, "{}: a {}{} x b {}{} does not give c {}", op,
             shape_str(a.shape()), trans_a ? "^T" : "", shape_str(b.shape()), trans_b ? "^T" : "", shape_str(c.shape()));
  KOFF_CHECK(m <= INT32_MAX && n <= INT32_MAX && ka <= INT32_MAX, "{}: sizes M={} N={} K={} exceed 32-bit BLAS", op, m,
             n, ka);
  PreparedGemm p{gemm_operand(a, trans_a), gemm_operand(b, trans_b), {}};
  p.shape = {m, n, ka, p.a.trans, p.b.trans, alpha, beta};
  return p;
}
}  // namespace

void gemm_into(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b, double alpha, double beta) {
  const PreparedGemm p = prepare_gemm_into(a, b, c, trans_a, trans_b, alpha, beta, "gemm_into");
  const GemmShape& s = p.shape;
  launch(a.device(), {"gemm", bytes_of({&a, &b, &c}), 2.0 * double(s.m) * double(s.n) * double(s.k)}, &Backend::gemm,
         p.a.t, p.b.t, c, 1, s.m, s.n, s.k, s.trans_a, s.trans_b, true, alpha, beta);
  count_gemm(1, s.m, s.n, s.k);
}

void gemm_many_into(const std::vector<GemmInto>& calls) {
  if (calls.empty()) return;
  // Reserved up front: a, b and c point into prepared and outs.
  std::vector<PreparedGemm> prepared;
  std::vector<Tensor> outs;
  prepared.reserve(calls.size());
  outs.reserve(calls.size());
  std::vector<const Tensor*> a, b;
  std::vector<Tensor*> c;
  std::vector<GemmShape> shapes;
  double bytes = 0.0, flops = 0.0;
  for (const GemmInto& g : calls) {
    check_compatible(calls.front().a, g.a, "gemm_many_into", "a");
    const PreparedGemm& p =
        prepared.emplace_back(prepare_gemm_into(g.a, g.b, g.c, g.trans_a, g.trans_b, g.alpha, g.beta, "gemm_many_into"));
    a.push_back(&p.a.t);
    b.push_back(&p.b.t);
    c.push_back(&outs.emplace_back(g.c));
    shapes.push_back(p.shape);
    bytes += bytes_of({&g.a, &g.b, &g.c});
    flops += 2.0 * double(p.shape.m) * double(p.shape.n) * double(p.shape.k);
  }
  launch(calls.front().a.device(), {"gemm_many", bytes, flops}, &Backend::gemm_many, a, b, c, shapes);
  for (const GemmShape& s : shapes) count_gemm(1, s.m, s.n, s.k);
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
  const double flops = 2.0 * double(rows) * double(out_features) * double(in);
  if (gw.trans) {  // W stored [out, in]: the backend's linear, which may fuse the bias into the GEMM
    Tensor y2 = y.view({rows, out_features});
    launch(x.device(), {"gemm", bytes_of({&x, &w, &bias, &y}), flops}, &Backend::linear,
           x.contiguous().reshape({rows, in}), gw.t, bias.defined() ? bias.contiguous() : Tensor(), y2);
  } else {  // W a transposed view of a contiguous [in, out]: a plain GEMM on it, no copy, then the bias
    launch(x.device(), {"gemm", bytes_of({&x, &w, &y}), flops}, &Backend::gemm, x.contiguous(), gw.t, y, 1, rows,
           out_features, in, false, false, true, 1.0, 0.0);
    if (bias.defined())
      launch(x.device(), {"add_bias", bytes_of({&y, &bias, &y})}, &Backend::add_bias, y, bias.contiguous(), y);
  }
  count_gemm(1, rows, out_features, in);
  return y;
}

}  // namespace koff::ops
