// Hard-concrete gate ops (KOFF_METHOD.md section 3) and the AdamW step.
#include "engine/ops/backend.h"
#include "engine/ops/checks.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

namespace {

Tensor gate_forward(int mode, const Tensor& log_alpha, const Tensor& u, const char* op) {
  check_float(log_alpha, op, "log_alpha");
  if (u.defined()) check_like(log_alpha, u, op, "u");
  Tensor out = empty_like(log_alpha);
  backend_of(log_alpha).hard_concrete(mode, log_alpha.contiguous(), u.defined() ? u.contiguous() : Tensor(), out);
  return out;
}

Tensor gate_backward(int mode, const Tensor& dout, const Tensor& log_alpha, const Tensor& u, const char* op) {
  check_float(log_alpha, op, "log_alpha");
  check_like(log_alpha, dout, op, "upstream gradient");
  if (u.defined()) check_like(log_alpha, u, op, "u");
  Tensor d = empty_like(log_alpha);
  backend_of(log_alpha).hard_concrete_backward(mode, dout.contiguous(), log_alpha.contiguous(),
                                               u.defined() ? u.contiguous() : Tensor(), d);
  return d;
}

}  // namespace

Tensor hard_concrete_sample(const Tensor& log_alpha, const Tensor& u) {
  check_defined(u, "hard_concrete_sample", "u");
  return gate_forward(0, log_alpha, u, "hard_concrete_sample");
}
Tensor hard_concrete_sample_backward(const Tensor& dz, const Tensor& log_alpha, const Tensor& u) {
  check_defined(u, "hard_concrete_sample_backward", "u");
  return gate_backward(0, dz, log_alpha, u, "hard_concrete_sample_backward");
}
Tensor hard_concrete_deterministic(const Tensor& log_alpha) {
  return gate_forward(1, log_alpha, {}, "hard_concrete_deterministic");
}
Tensor hard_concrete_p_open(const Tensor& log_alpha) { return gate_forward(2, log_alpha, {}, "hard_concrete_p_open"); }
Tensor hard_concrete_p_open_backward(const Tensor& dp, const Tensor& log_alpha) {
  return gate_backward(2, dp, log_alpha, {}, "hard_concrete_p_open_backward");
}

void adamw_step_(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& config, int64_t step) {
  const char* op = "adamw_step_";
  check_float(param, op, "param");
  check_like(param, grad, op, "grad");
  check_like(param, m, op, "m");
  check_like(param, v, op, "v");
  KOFF_CHECK(step >= 1, "{}: step counts from 1, got {}", op, step);
  KOFF_CHECK(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 && config.beta2 < 1,
             "{}: betas must lie in [0, 1), got {} and {}", op, config.beta1, config.beta2);
  // The state tensors are updated in place; strided views go through contiguous copies written back.
  Tensor pc = param.contiguous(), mc = m.contiguous(), vc = v.contiguous();
  backend_of(param).adamw(pc, grad.contiguous(), mc, vc, config, step);
  if (!param.is_contiguous()) param.copy_(pc);
  if (!m.is_contiguous()) m.copy_(mc);
  if (!v.is_contiguous()) v.copy_(vc);
}

void adamw_multi_(const std::vector<Tensor*>& params, const std::vector<Tensor>& grads, const std::vector<Tensor*>& m,
                  const std::vector<Tensor*>& v, const AdamWConfig& config, int64_t step) {
  const char* op = "adamw_multi_";
  KOFF_CHECK(params.size() == grads.size() && params.size() == m.size() && params.size() == v.size(),
             "{}: {} params, {} grads, {} m, {} v", op, params.size(), grads.size(), m.size(), v.size());
  KOFF_CHECK(step >= 1, "{}: step counts from 1, got {}", op, step);
  KOFF_CHECK(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 && config.beta2 < 1,
             "{}: betas must lie in [0, 1), got {} and {}", op, config.beta1, config.beta2);
  std::vector<Tensor*> p, mm, vv;
  std::vector<Tensor> g;  // contiguous gradients, kept alive for the call
  std::vector<const Tensor*> gp;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!grads[i].defined()) continue;
    check_float(*params[i], op, "param");
    check_like(*params[i], grads[i], op, "grad");
    check_like(*params[i], *m[i], op, "m");
    check_like(*params[i], *v[i], op, "v");
    KOFF_CHECK(params[i]->is_contiguous() && m[i]->is_contiguous() && v[i]->is_contiguous(),
               "{}: parameter {} and its state must be contiguous", op, i);
    KOFF_CHECK(params[i]->device() == params.front()->device(), "{}: parameters on {} and {}", op,
               params.front()->device().str(), params[i]->device().str());
    p.push_back(params[i]), mm.push_back(m[i]), vv.push_back(v[i]);
    g.push_back(grads[i].contiguous());
  }
  if (p.empty()) return;
  for (const Tensor& t : g) gp.push_back(&t);
  backend_of(*p.front()).adamw_multi(p, gp, mm, vv, config, step);
}

}  // namespace koff::ops
