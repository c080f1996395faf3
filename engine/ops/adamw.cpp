// The AdamW step, one tensor or many at once.
#include "engine/ops/checks.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

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
  launch(param.device(), {"adamw", bytes_of({&param, &grad, &m, &v}) + bytes_of({&param, &m, &v})}, &Backend::adamw, pc,
         grad.contiguous(), mc, vc, config, step);
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
  const Device device = p.front()->device();
  if (!backend_for(device).adamw_multi) {  // a backend without the many-tensor step: one launch per tensor
    for (size_t i = 0; i < p.size(); ++i)
      launch(device, {"adamw", 7.0 * static_cast<double>(p[i]->nbytes())}, &Backend::adamw, *p[i], *gp[i], *mm[i],
             *vv[i], config, step);
    return;
  }
  double bytes = 0;
  for (const Tensor* t : p) bytes += 7.0 * static_cast<double>(t->nbytes());  // read p g m v, write p m v
  launch(device, {"adamw_multi", bytes}, &Backend::adamw_multi, p, gp, mm, vv, config, step);
}

}  // namespace koff::ops
