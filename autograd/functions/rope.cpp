// Rotary position embedding. Each pair is rotated by an angle, an orthogonal map, so the gradient
// is the rotation by the opposite angle.
#include "autograd/functions.h"

namespace koff::autograd {

Variable rope(const Variable& x, const ops::RopeTables& tables) {
  return make_result(ops::rope(x.data(), tables), {x}, "rope", [tables](const Tensor& dy, const std::vector<bool>&) {
    return std::vector<Tensor>{ops::rope(dy, tables, /*inverse=*/true)};
  });
}

}  // namespace koff::autograd
