// RMSNorm: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
// dx = rstd * (dy*w - x * rstd^2 * mean(dy*w*x)),  dw = sum over rows of dy * x * rstd.
#include "autograd/functions.h"

namespace koff::autograd {

Variable rmsnorm(const Variable& x, const Variable& w, double eps) {
  Tensor tx = x.data(), tw = w.data();
  ops::RmsNormOut r = ops::rmsnorm(tx, tw, eps);
  return make_result(r.y, {x, w}, "rmsnorm", [tx, tw, rstd = r.rstd](const Tensor& dy, const std::vector<bool>& n) {
    ops::RmsNormGrads g = ops::rmsnorm_backward(dy, tx, tw, rstd);
    return std::vector<Tensor>{n[0] ? g.dx : Tensor(), n[1] ? g.dw : Tensor()};
  });
}

}  // namespace koff::autograd
