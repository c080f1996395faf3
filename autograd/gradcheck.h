// Gradient check by central finite differences, in f64.
//
// f maps the inputs to a single-element Variable. For every input that requires a gradient, each
// element is perturbed by +-eps and the numerical derivative (f(x+eps) - f(x-eps)) / 2eps is compared
// with the analytical gradient from backward(): |analytical - numerical| <= atol + rtol*|numerical|.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace koff::autograd {

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;   // over all checked elements
  double max_rel_error = 0;   // |a - n| / max(|n|, atol)
  std::string first_failure;  // "input 1 element 7: analytical 0.5 numerical 0.25"
  int64_t checked = 0;
};

using ScalarFn = std::function<Variable(const std::vector<Variable>&)>;

GradcheckResult gradcheck(const ScalarFn& f, const std::vector<Variable>& inputs, double eps = 1e-6,
                          double atol = 1e-8, double rtol = 1e-6);

}  // namespace koff::autograd
