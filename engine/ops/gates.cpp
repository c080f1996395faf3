// Gate ops (KOFF_METHOD.md section 3): head/neuron gates applied to activations (mul_groups, the
// SwiGLU with the neuron gate fused in) with their reductions, and the hard-concrete distribution.
#include "engine/ops/checks.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

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
  launch(x.device(), {"mul_groups", bytes_of({&x, &z, &out})}, &Backend::mul_groups, x.contiguous(), z.contiguous(),
         rows, z.size(0), k, out);
  return out;
}

Tensor sum_groups_product(const Tensor& dy, const Tensor& x, int64_t groups, int64_t k) {
  check_float(x, "sum_groups_product", "x");
  check_like(x, dy, "sum_groups_product", "dy");
  const int64_t rows = group_rows(x, groups, k, "sum_groups_product");
  Tensor dz = empty_like(x, {groups});
  launch(x.device(), {"sum_groups_product", bytes_of({&dy, &x, &dz})}, &Backend::sum_groups_product, dy.contiguous(),
         x.contiguous(), rows, groups, k, dz);
  return dz;
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
  launch(gate.device(), {"swiglu_gated", bytes_of({&gate, &up, &z, &out})}, &Backend::swiglu_gated, gate.contiguous(),
         up.contiguous(), z.contiguous(), out);
  return out;
}

SwigluGatedGrads swiglu_gated_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, const Tensor& z,
                                       bool want_dz) {
  check_float(gate, "swiglu_gated_backward", "gate");
  check_like(gate, up, "swiglu_gated_backward", "up");
  check_like(gate, dy, "swiglu_gated_backward", "dy");
  check_neuron_gate(gate, z, "swiglu_gated_backward");
  SwigluGatedGrads g{empty_like(gate), empty_like(gate), want_dz ? empty_like(z) : Tensor()};
  launch(gate.device(), {"swiglu_gated_backward", bytes_of({&dy, &gate, &up, &z, &g.dgate, &g.dup, &g.dz})},
         &Backend::swiglu_gated_backward, dy.contiguous(), gate.contiguous(), up.contiguous(), z.contiguous(), g.dgate,
         g.dup, g.dz);
  return g;
}

namespace {

Tensor gate_forward(GateFn fn, const Tensor& log_alpha, const Tensor& u, const char* op) {
  check_float(log_alpha, op, "log_alpha");
  if (u.defined()) check_like(log_alpha, u, op, "u");
  Tensor out = empty_like(log_alpha);
  launch(log_alpha.device(), {"hard_concrete", bytes_of({&log_alpha, &u, &out})}, &Backend::hard_concrete, fn,
         log_alpha.contiguous(), u.defined() ? u.contiguous() : Tensor(), out);
  return out;
}

Tensor gate_backward(GateFn fn, const Tensor& dout, const Tensor& log_alpha, const Tensor& u, const char* op) {
  check_float(log_alpha, op, "log_alpha");
  check_like(log_alpha, dout, op, "upstream gradient");
  if (u.defined()) check_like(log_alpha, u, op, "u");
  Tensor d = empty_like(log_alpha);
  launch(log_alpha.device(), {"hard_concrete_backward", bytes_of({&dout, &log_alpha, &u, &d})},
         &Backend::hard_concrete_backward, fn, dout.contiguous(), log_alpha.contiguous(),
         u.defined() ? u.contiguous() : Tensor(), d);
  return d;
}

}  // namespace

Tensor hard_concrete_sample(const Tensor& log_alpha, const Tensor& u) {
  check_defined(u, "hard_concrete_sample", "u");
  return gate_forward(GateFn::sample, log_alpha, u, "hard_concrete_sample");
}
Tensor hard_concrete_sample_backward(const Tensor& dz, const Tensor& log_alpha, const Tensor& u) {
  check_defined(u, "hard_concrete_sample_backward", "u");
  return gate_backward(GateFn::sample, dz, log_alpha, u, "hard_concrete_sample_backward");
}
Tensor hard_concrete_deterministic(const Tensor& log_alpha) {
  return gate_forward(GateFn::deterministic, log_alpha, {}, "hard_concrete_deterministic");
}
Tensor hard_concrete_p_open(const Tensor& log_alpha) {
  return gate_forward(GateFn::p_open, log_alpha, {}, "hard_concrete_p_open");
}
Tensor hard_concrete_p_open_backward(const Tensor& dp, const Tensor& log_alpha) {
  return gate_backward(GateFn::p_open, dp, log_alpha, {}, "hard_concrete_p_open_backward");
}

}  // namespace koff::ops
