// RMSNorm and its gradient.
#include "engine/ops/checks.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

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
  launch(x.device(), {"rmsnorm", bytes_of({&x, &w, &r.y, &r.rstd})}, &Backend::rmsnorm, x.contiguous(), w.contiguous(),
         eps, r.y, r.rstd);
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
  launch(x.device(), {"rmsnorm_backward", bytes_of({&dy, &x, &w, &rstd, &g.dx, &g.dw})}, &Backend::rmsnorm_backward,
         dy.contiguous(), x.contiguous(), w.contiguous(), rstd.contiguous(), g.dx, g.dw);
  return g;
}

}  // namespace koff::ops
