// Tensor: a strided view (shape, strides in elements, offset in elements) over a shared Storage.
//
// Views (slice, transpose, permute, reshape of a contiguous tensor, expand) share storage; anything
// that has to move data (contiguous(), to(), clone()) allocates. Element access from C++ is for
// tests and small work: kernels take raw pointers of contiguous tensors (engine/cpu, cuda/).
#pragma once

// fmt 9 switches constexpr off under nvcc, and gcc 12 in C++20 then rejects its headers; every host
// translation unit has it on, so turn it on for the .cu files that include this header too.
#if defined(__CUDACC__) && !defined(FMT_USE_CONSTEXPR)
#define FMT_USE_CONSTEXPR 1
#endif
#include <fmt/format.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor/dtype.h"
#include "engine/tensor/storage.h"

namespace koff {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // Factories. Memory of empty() is uninitialised.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
    return full(shape, 1.0, dtype, device);
  }
  static Tensor arange(int64_t n, DType dtype = DType::i64);
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  // Wraps existing storage (used by the safetensors mmap reader).
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                             int64_t offset_elements = 0);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool is_contiguous() const;
  bool same_storage(const Tensor& other) const { return storage_ == other.storage_; }

  // Typed pointer to the first element (checks the dtype). Raw pointer for dtype-generic code.
  template <typename T>
  T* data() const;
  void* raw_data() const;

  // Data movement.
  Tensor contiguous() const;  // itself if already contiguous
  Tensor clone() const;       // always a fresh contiguous copy
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  void copy_(const Tensor& src);  // same shape; converts dtype, crosses devices
  void fill_(double value);
  void zero_();

  // Views.
  Tensor view(const Shape& shape) const;     // requires contiguity; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // view when possible, else a copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(-2, -1); }
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops `dim`
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor expand(const Shape& shape) const;  // broadcast view: stride 0 on expanded dims
  Tensor flatten() const { return reshape({numel()}); }

  // Slow element access for tests and scalar work (CPU only).
  double item() const;
  double at(const std::vector<int64_t>& index) const;
  void set(const std::vector<int64_t>& index, double value);
  template <typename T>
  std::vector<T> to_vector() const;  // contiguous row-major copy, converted to T

  std::string str(int64_t max_per_dim = 6) const;  // readable printer, summarises large tensors

 private:
  int64_t wrap_dim(int64_t d, int64_t ndim) const;
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

// Element-by-element copy between two strided host buffers (element strides), converting dtypes:
// the CPU path of Tensor::copy_, for allocators that keep device memory on the host (the emulator).
void copy_strided_host(void* dst, DType dst_dtype, const int64_t* dst_strides, const void* src, DType src_dtype,
                       const int64_t* src_strides, const int64_t* shape, int ndim);

// Checks used by ops: the error names both sides.
void check_same_shape(const Tensor& a, const Tensor& b, const char* op);
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
void check_dim(const Tensor& a, int64_t ndim, const char* op, const char* what);

// Numerical comparison helpers (tests and the op harness).
double max_abs_diff(const Tensor& a, const Tensor& b);
// max |a-b| / max(|b|_max, tiny): a relative error that does not explode on individual near-zeros.
double max_rel_error(const Tensor& a, const Tensor& b);
bool has_non_finite(const Tensor& a);

// ---- template definitions ----

template <typename T>
T* Tensor::data() const {
  KOFF_CHECK(defined(), "data() of an undefined tensor");
  KOFF_CHECK(DTypeOf<T>::value == dtype_, "data<{}>() of a tensor of dtype {}", dtype_name(DTypeOf<T>::value),
             dtype_name(dtype_));
  return static_cast<T*>(storage_->data()) + offset_;
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  KOFF_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()),
             "from_vector: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape, DTypeOf<T>::value);
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

}  // namespace koff

template <>
struct fmt::formatter<koff::Tensor> : fmt::formatter<std::string> {
  auto format(const koff::Tensor& t, fmt::format_context& ctx) const {
    return fmt::formatter<std::string>::format(t.str(), ctx);
  }
};
