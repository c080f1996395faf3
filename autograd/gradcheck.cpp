#include "autograd/gradcheck.h"

#include <cmath>

namespace koff::autograd {

GradcheckResult gradcheck(const ScalarFn& f, const std::vector<Variable>& inputs, double eps, double atol,
                          double rtol) {
  for (const auto& v : inputs) {
    KOFF_CHECK(v.data().dtype() == DType::f64 && v.data().device().is_cpu() && v.data().is_contiguous(),
               "gradcheck: input '{}' must be a contiguous f64 CPU tensor, got {} on {}", v.name(),
               dtype_name(v.data().dtype()), v.data().device().str());
    const_cast<Variable&>(v).zero_grad();
  }
  Variable out = f(inputs);
  KOFF_CHECK(out.data().numel() == 1, "gradcheck: f must return one element, got shape {}",
             shape_str(out.data().shape()));
  out.backward();

  GradcheckResult result;
  NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Variable& v = inputs[i];
    if (!v.requires_grad()) continue;
    Tensor analytical = v.grad().defined() ? v.grad() : Tensor::zeros(v.shape(), DType::f64);
    double* x = v.data().data<double>();
    Tensor a_keep = analytical.to(DType::f64).contiguous();
    const double* a = a_keep.data<double>();
    for (int64_t e = 0; e < v.data().numel(); ++e) {
      const double saved = x[e];
      x[e] = saved + eps;
      double plus = f(inputs).data().item();
      x[e] = saved - eps;
      double minus = f(inputs).data().item();
      x[e] = saved;
      double numerical = (plus - minus) / (2 * eps);
      double err = std::abs(a[e] - numerical);
      result.max_abs_error = std::max(result.max_abs_error, err);
      result.max_rel_error = std::max(result.max_rel_error, err / std::max(std::abs(numerical), atol));
      ++result.checked;
      if (!(err <= atol + rtol * std::abs(numerical)) && result.ok) {
        result.ok = false;
        result.first_failure = fmt::format("input {} ('{}') element {}: analytical {:.12g}, numerical {:.12g}", i,
                                           v.name(), e, a[e], numerical);
      }
    }
  }
  return result;
}

}  // namespace koff::autograd
