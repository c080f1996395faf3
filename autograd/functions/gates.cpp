// Hard-concrete gates (Louizos et al. 2018; KOFF_METHOD.md section 3).
//   sample: z = clamp(s*(zeta-gamma)+gamma, 0, 1), s = sigmoid((log u - log(1-u) + log_alpha)/beta)
//           dz/dlog_alpha = (zeta-gamma) * s*(1-s)/beta inside the clamp, 0 where it is active
//   p_open = sigmoid(log_alpha - beta*log(-gamma/zeta)),  dp/dlog_alpha = p*(1-p)
#include "autograd/functions.h"

namespace koff::autograd {

Variable hard_concrete_sample(const Variable& log_alpha, const Tensor& u) {
  Tensor la = log_alpha.data();
  return make_result(ops::hard_concrete_sample(la, u), {log_alpha}, "hard_concrete_sample",
                     [la, u](const Tensor& dz, const std::vector<bool>&) {
                       return std::vector<Tensor>{ops::hard_concrete_sample_backward(dz, la, u)};
                     });
}

Variable hard_concrete_p_open(const Variable& log_alpha) {
  Tensor la = log_alpha.data();
  return make_result(ops::hard_concrete_p_open(la), {log_alpha}, "hard_concrete_p_open",
                     [la](const Tensor& dp, const std::vector<bool>&) {
                       return std::vector<Tensor>{ops::hard_concrete_p_open_backward(dp, la)};
                     });
}

}  // namespace koff::autograd
