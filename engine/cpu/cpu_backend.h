// The CPU backend: the reference implementation of every op (engine/tensor/backend.h).
//
// One file per op family fills its entries: elementwise.cpp, gemm.cpp, embedding.cpp, norm.cpp,
// rope.cpp, attention.cpp, loss.cpp, gates.cpp, adamw.cpp. Each opens with the math of its kernels,
// holds the kernels (templates over float and double on raw pointers) and, last, `fill_<family>`,
// whose entries pick the element type of the tensors and call the kernels. cpu_backend.cpp puts the
// table together. The CPU computes in f32 or f64 (f64 serves the gradient checks).
#pragma once

#include <cstdint>

#include "engine/tensor/backend.h"

namespace koff {

// The CPU table (built on first use, so it exists before any static initialiser could ask for it).
const Backend& cpu_backend();

}  // namespace koff

namespace koff::cpu {

// Each op family's file fills its entries (the same families and file names in every layer).
void fill_elementwise(Backend&), fill_gemm(Backend&), fill_embedding(Backend&), fill_norm(Backend&),
    fill_rope(Backend&), fill_attention(Backend&), fill_loss(Backend&), fill_gates(Backend&), fill_adamw(Backend&);

// ---- helpers of the entries -------------------------------------------------------------------

// Calls fn(T{}) with T = float or double for the tensor's dtype.
template <typename Fn>
void on_float(const Tensor& t, const char* op, Fn&& fn) {
  switch (t.dtype()) {
    case DType::f32:
      fn(float{});
      return;
    case DType::f64:
      fn(double{});
      return;
    default:
      fail("{}: the CPU backend computes in f32 or f64, got {}", op, dtype_name(t.dtype()));
  }
}

// Calls fn(I{}) with I = int32_t or int64_t for an id/target tensor.
template <typename Fn>
void on_index(const Tensor& t, const char* op, Fn&& fn) {
  switch (t.dtype()) {
    case DType::i32:
      fn(int32_t{});
      return;
    case DType::i64:
      fn(int64_t{});
      return;
    default:
      fail("{}: ids/targets must be i32 or i64, got {}", op, dtype_name(t.dtype()));
  }
}

// Data of an input (ptr) or output (mut) tensor; null for an undefined one.
template <typename T>
const T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <typename T>
T* mut(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Rows of a [..., n] tensor.
inline int64_t rows_of(const Tensor& t) {
  const int64_t n = t.dim() ? t.size(-1) : 1;
  return n ? t.numel() / n : 0;
}

}  // namespace koff::cpu
