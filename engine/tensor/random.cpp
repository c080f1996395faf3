#include "engine/tensor/random.h"

namespace koff {

Tensor randn(const Shape& shape, const Philox& rng, DType dtype, double std, uint64_t first) {
  Tensor t = Tensor::empty(shape, DType::f64);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std * rng.normal(first + static_cast<uint64_t>(i));
  return t.to(dtype);
}

Tensor rand_uniform(const Shape& shape, const Philox& rng, double lo, double hi, DType dtype, uint64_t first) {
  Tensor t = Tensor::empty(shape, DType::f64);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = lo + (hi - lo) * rng.uniform(first + static_cast<uint64_t>(i));
  return t.to(dtype);
}

}  // namespace koff
