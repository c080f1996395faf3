// Validation helpers shared by the ops/ files (internal to engine/ops). Every message starts with
// the op's name and names the offending tensor, so the CLI can print it as one line.
#pragma once

#include "engine/tensor/tensor.h"

namespace koff::ops::detail {

inline void check_defined(const Tensor& t, const char* op, const char* what) {
  KOFF_CHECK(t.defined(), "{}: {} is an undefined tensor", op, what);
}

// A compute dtype: f32/f64 on CPU, any floating type elsewhere (the CUDA backend adds bf16/f16).
inline void check_float(const Tensor& t, const char* op, const char* what) {
  check_defined(t, op, what);
  if (t.device().is_cpu()) {
    KOFF_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "{}: {} must be f32 or f64 on cpu, got {}", op, what,
               dtype_name(t.dtype()));
  } else {
    KOFF_CHECK(is_floating(t.dtype()), "{}: {} must be a floating dtype, got {}", op, what, dtype_name(t.dtype()));
  }
}

inline void check_index(const Tensor& t, const char* op, const char* what) {
  check_defined(t, op, what);
  KOFF_CHECK(t.dtype() == DType::i32 || t.dtype() == DType::i64, "{}: {} must be i32 or i64, got {}", op, what,
             dtype_name(t.dtype()));
}

// b is a floating tensor on a's device with a's dtype (shapes are checked by the caller).
inline void check_compatible(const Tensor& a, const Tensor& b, const char* op, const char* what) {
  check_defined(b, op, what);
  check_same_dtype(a, b, op);
  check_same_device(a, b, op);
}

// Same shape, dtype and device as a.
inline void check_like(const Tensor& a, const Tensor& b, const char* op, const char* what) {
  check_compatible(a, b, op, what);
  check_same_shape(a, b, op);
}

// Statistics a backward re-reads (attention/cross-entropy lse, RMSNorm rstd) and loss sums: f64 for
// f64 inputs, f32 otherwise (a bf16 lse would put ~0.4% errors into every recomputed probability).
inline DType stat_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }
inline Tensor empty_stat(const Tensor& t, const Shape& shape) {
  return Tensor::empty(shape, stat_dtype(t.dtype()), t.device());
}
inline void check_stat(const Tensor& x, const Tensor& s, const char* op, const char* what) {
  check_defined(s, op, what);
  check_same_device(x, s, op);
  KOFF_CHECK(s.dtype() == stat_dtype(x.dtype()), "{}: {} must be {} for {} inputs, got {}", op, what,
             dtype_name(stat_dtype(x.dtype())), dtype_name(x.dtype()), dtype_name(s.dtype()));
}

inline Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }
inline Tensor empty_like(const Tensor& t, const Shape& shape) { return Tensor::empty(shape, t.dtype(), t.device()); }

// Shape without its last dim.
inline Shape leading(const Shape& s) { return Shape(s.begin(), s.end() - (s.empty() ? 0 : 1)); }

}  // namespace koff::ops::detail
