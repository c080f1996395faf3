#include "engine/tensor/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

namespace koff {

// ---------------------------------------------------------------------------------------------
// dtype / device helpers
// ---------------------------------------------------------------------------------------------

DType dtype_from_name(const std::string& name) {
  std::string n;
  for (char c : name) n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "f32" || n == "float32" || n == "float") return DType::f32;
  if (n == "f64" || n == "float64" || n == "double") return DType::f64;
  if (n == "bf16" || n == "bfloat16") return DType::bf16;
  if (n == "f16" || n == "float16" || n == "half") return DType::f16;
  if (n == "i32" || n == "int32") return DType::i32;
  if (n == "i64" || n == "int64") return DType::i64;
  fail("unknown dtype '{}' (known: f32, f64, bf16, f16, i32, i64)", name);
}

float f16_to_f32(f16 v) {
  uint32_t sign = (v.bits & 0x8000u) << 16, exp = (v.bits >> 10) & 0x1f, mant = v.bits & 0x3ffu, u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

f16 f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  int32_t exp = static_cast<int32_t>((u >> 23) & 0xff) - 127 + 15;
  uint32_t mant = u & 0x7fffffu;
  if (((u >> 23) & 0xff) == 0xff) return f16{uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0))};
  if (exp >= 31) return f16{uint16_t(sign | 0x7c00u)};
  if (exp <= 0) {
    if (exp < -10) return f16{uint16_t(sign)};
    mant |= 0x800000u;
    uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return f16{uint16_t(sign | half)};
  }
  uint32_t half = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) ++half;  // may carry into exponent: correct
  return f16{uint16_t(half)};
}

std::string Device::str() const { return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index); }

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

// ---------------------------------------------------------------------------------------------
// scalar load/store by dtype (the slow generic path)
// ---------------------------------------------------------------------------------------------

namespace {

double load(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::f64: return static_cast<const double*>(base)[i];
    case DType::bf16: return bf16_to_f32(static_cast<const bf16*>(base)[i]);
    case DType::f16: return f16_to_f32(static_cast<const f16*>(base)[i]);
    case DType::i32: return static_cast<const int32_t*>(base)[i];
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(base)[i]);
  }
  return 0;
}

void store(void* base, DType t, int64_t i, double v) {
  switch (t) {
    case DType::f32: static_cast<float*>(base)[i] = static_cast<float>(v); break;
    case DType::f64: static_cast<double*>(base)[i] = v; break;
    case DType::bf16: static_cast<bf16*>(base)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::f16: static_cast<f16*>(base)[i] = f32_to_f16(static_cast<float>(v)); break;
    case DType::i32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
    case DType::i64: static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v); break;
  }
}

// Calls fn(src_offset, dst_offset) for every element of `shape`, walking both stride sets.
template <typename Fn>
void for_each_index(const Shape& shape, const Shape& a_strides, const Shape& b_strides, Fn&& fn) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  std::vector<int64_t> idx(nd, 0);
  int64_t a = 0, b = 0;
  for (int64_t k = 0; k < n; ++k) {
    fn(a, b);
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        a += a_strides[d];
        b += b_strides[d];
        break;
      }
      a -= a_strides[d] * (shape[d] - 1);
      b -= b_strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

template <typename S, typename D>
void convert_contiguous(const S* src, D* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<S, bf16>) {
      if constexpr (std::is_same_v<D, float>) dst[i] = bf16_to_f32(src[i]);
      else dst[i] = static_cast<D>(bf16_to_f32(src[i]));
    } else if constexpr (std::is_same_v<D, bf16>) {
      dst[i] = f32_to_bf16(static_cast<float>(src[i]));
    } else {
      dst[i] = static_cast<D>(src[i]);
    }
  }
}

}  // namespace

void copy_strided_host(void* dst, DType dst_dtype, const int64_t* dst_strides, const void* src, DType src_dtype,
                       const int64_t* src_strides, const int64_t* shape, int ndim) {
  const Shape sh(shape, shape + ndim), ss(src_strides, src_strides + ndim), ds(dst_strides, dst_strides + ndim);
  const size_t es = dtype_size(dst_dtype);
  if (src_dtype == dst_dtype) {
    for_each_index(sh, ss, ds, [&](int64_t a, int64_t b) {
      std::memcpy(static_cast<char*>(dst) + b * es, static_cast<const char*>(src) + a * es, es);
    });
  } else {
    for_each_index(sh, ss, ds, [&](int64_t a, int64_t b) { store(dst, dst_dtype, b, load(src, src_dtype, a)); });
  }
}

// ---------------------------------------------------------------------------------------------
// factories
// ---------------------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) KOFF_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
  Tensor t;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, Device::cpu());
  t.fill_(value);
  return device.is_cpu() ? t : t.to(device);
}

Tensor Tensor::arange(int64_t n, DType dtype) {
  Tensor t = empty({n}, dtype);
  for (int64_t i = 0; i < n; ++i) store(t.raw_data(), dtype, i, static_cast<double>(i));
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                            int64_t offset_elements) {
  size_t need = (static_cast<size_t>(offset_elements) + static_cast<size_t>(shape_numel(shape))) * dtype_size(dtype);
  KOFF_CHECK(need <= storage->nbytes(), "tensor of shape {} {} at element offset {} needs {} bytes; storage has {}",
             shape_str(shape), dtype_name(dtype), offset_elements, need, storage->nbytes());
  Tensor t;
  t.storage_ = std::move(storage);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.offset_ = offset_elements;
  t.dtype_ = dtype;
  return t;
}

// ---------------------------------------------------------------------------------------------
// properties
// ---------------------------------------------------------------------------------------------

int64_t Tensor::wrap_dim(int64_t d, int64_t ndim) const {
  int64_t w = d < 0 ? d + ndim : d;
  KOFF_CHECK(w >= 0 && w < ndim, "dimension {} out of range for a tensor of shape {}", d, shape_str(shape_));
  return w;
}

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, dim())]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  KOFF_CHECK(defined(), "raw_data() of an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

// ---------------------------------------------------------------------------------------------
// data movement
// ---------------------------------------------------------------------------------------------

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor out = empty(shape_, dtype, device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape_, dtype_, device);
  copy_bytes(out.raw_data(), device, src.raw_data(), src.device(), src.nbytes());
  return out;
}

void Tensor::copy_(const Tensor& src) {
  KOFF_CHECK(defined() && src.defined(), "copy_ with an undefined tensor");
  KOFF_CHECK(shape_ == src.shape_, "copy_: destination shape {} differs from source shape {}", shape_str(shape_),
             shape_str(src.shape_));
  if (numel() == 0) return;  // empty tensors own no memory (null data): nothing to move
  if (!device().is_cpu() && device() == src.device()) {
    // Same accelerator: strided copies and dtype conversions run on the device when its allocator can
    // (an overlapping source is first copied out whole).
    Allocator& alloc = allocator_for(device());
    Tensor s = src;
    if (same_storage(src) && !(is_contiguous() && src.is_contiguous() && offset_ == src.offset_)) {
      s = empty(src.shape_, src.dtype_, src.device());
      if (!alloc.copy_strided(s.raw_data(), s.dtype_, s.strides_.data(), src.raw_data(), src.dtype_,
                              src.strides_.data(), shape_.data(), static_cast<int>(dim()), device().index))
        s = src;
    }
    if (!same_storage(s) || s.raw_data() != raw_data() || s.dtype_ != dtype_ || s.strides_ != strides_) {
      if (alloc.copy_strided(raw_data(), dtype_, strides_.data(), s.raw_data(), s.dtype_, s.strides_.data(),
                             shape_.data(), static_cast<int>(dim()), device().index))
        return;
    } else {
      return;  // the same elements in the same layout: nothing to do
    }
  }
  if (!device().is_cpu() || !src.device().is_cpu()) {
    // Cross-device copies move bytes of contiguous tensors; conversion happens on the host. A strided
    // destination first gets the source onto its own device, then a same-device strided copy.
    if (!is_contiguous()) {
      KOFF_CHECK(device() != src.device(), "copy_ into a non-contiguous {} tensor", device().str());
      copy_(src.to(device()));
      return;
    }
    Tensor s = src.device().is_cpu() ? src.to(dtype_).contiguous() : src.contiguous();
    if (s.dtype() != dtype_) s = s.to(Device::cpu()).to(dtype_);
    copy_bytes(raw_data(), device(), s.raw_data(), s.device(), nbytes());
    return;
  }
  const int64_t n = numel();
  if (is_contiguous() && src.is_contiguous()) {
    if (dtype_ == src.dtype_) {
      if (raw_data() != src.raw_data()) std::memmove(raw_data(), src.raw_data(), nbytes());
      return;
    }
    // The conversions that checkpoint loading and mixed precision need, without the double path.
    if (src.dtype_ == DType::bf16 && dtype_ == DType::f32)
      return convert_contiguous(src.data<bf16>(), data<float>(), n);
    if (src.dtype_ == DType::f32 && dtype_ == DType::bf16)
      return convert_contiguous(src.data<float>(), data<bf16>(), n);
    if (src.dtype_ == DType::f32 && dtype_ == DType::f64)
      return convert_contiguous(src.data<float>(), data<double>(), n);
    if (src.dtype_ == DType::f64 && dtype_ == DType::f32)
      return convert_contiguous(src.data<double>(), data<float>(), n);
  }
  // Overlapping strided copies would read written data; go through a temporary.
  if (same_storage(src) && !(is_contiguous() && src.is_contiguous() && offset_ == src.offset_)) {
    Tensor tmp = src.clone();
    copy_(tmp);
    return;
  }
  const void* sb = src.raw_data();
  void* db = raw_data();
  const DType st = src.dtype_, dt = dtype_;
  const size_t es = dtype_size(dt);
  if (st == dt) {
    for_each_index(shape_, src.strides_, strides_, [&](int64_t a, int64_t b) {
      std::memcpy(static_cast<char*>(db) + b * es, static_cast<const char*>(sb) + a * es, es);
    });
  } else {
    for_each_index(shape_, src.strides_, strides_, [&](int64_t a, int64_t b) { store(db, dt, b, load(sb, st, a)); });
  }
}

void Tensor::fill_(double value) {
  KOFF_CHECK(defined(), "fill_ of an undefined tensor");
  if (!device().is_cpu()) {
    Tensor host = full(shape_, value, dtype_);
    copy_(host);
    return;
  }
  void* db = raw_data();
  if (is_contiguous()) {
    const int64_t n = numel();
    switch (dtype_) {
      case DType::f32: std::fill_n(static_cast<float*>(db), n, static_cast<float>(value)); return;
      case DType::f64: std::fill_n(static_cast<double*>(db), n, value); return;
      default: for (int64_t i = 0; i < n; ++i) store(db, dtype_, i, value); return;
    }
  }
  Shape zero(shape_.size(), 0);
  for_each_index(shape_, zero, strides_, [&](int64_t, int64_t b) { store(db, dtype_, b, value); });
}

void Tensor::zero_() {
  if (is_contiguous() && defined()) {
    allocator_for(device()).memset_zero(raw_data(), nbytes(), device().index);
  } else {
    fill_(0.0);
  }
}

// ---------------------------------------------------------------------------------------------
// views
// ---------------------------------------------------------------------------------------------

Tensor Tensor::view(const Shape& shape) const {
  Shape s = shape;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      KOFF_CHECK(infer < 0, "view: more than one -1 in {}", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    KOFF_CHECK(known > 0 && numel() % known == 0, "view: cannot infer -1 in {} for a tensor of shape {}",
               shape_str(shape), shape_str(shape_));
    s[infer] = numel() / known;
  }
  KOFF_CHECK(shape_numel(s) == numel(), "view: shape {} has {} elements, tensor of shape {} has {}", shape_str(s),
             shape_numel(s), shape_str(shape_), numel());
  KOFF_CHECK(is_contiguous(), "view: tensor of shape {} is not contiguous (use reshape)", shape_str(shape_));
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const { return contiguous().view(shape); }

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  Tensor t = *this;
  d0 = wrap_dim(d0, dim());
  d1 = wrap_dim(d1, dim());
  std::swap(t.shape_[d0], t.shape_[d1]);
  std::swap(t.strides_[d0], t.strides_[d1]);
  return t;
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  KOFF_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: {} dims given for a tensor of shape {}",
             dims.size(), shape_str(shape_));
  Tensor t = *this;
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim());
    KOFF_CHECK(!seen[d], "permute: dimension {} repeated", d);
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim());
  KOFF_CHECK(step > 0, "slice: step must be positive, got {}", step);
  int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Tensor t = *this;
  t.offset_ += start * strides_[d];
  t.shape_[d] = (end - start + step - 1) / step;
  t.strides_[d] *= step;
  return t;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim());
  int64_t n = shape_[d];
  if (index < 0) index += n;
  KOFF_CHECK(index >= 0 && index < n, "select: index {} out of range for dimension {} of shape {}", index, d,
             shape_str(shape_));
  Tensor t = *this;
  t.offset_ += index * strides_[d];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1);
  Tensor t = *this;
  int64_t stride = d < dim() ? strides_[d] * shape_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, stride);
  return t;
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim());
  KOFF_CHECK(shape_[d] == 1, "squeeze: dimension {} of shape {} is not 1", d, shape_str(shape_));
  Tensor t = *this;
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::expand(const Shape& shape) const {
  KOFF_CHECK(static_cast<int64_t>(shape.size()) >= dim(), "expand: cannot expand shape {} to {}",
             shape_str(shape_), shape_str(shape));
  Tensor t = *this;
  size_t lead = shape.size() - shape_.size();
  t.shape_ = shape;
  t.strides_.assign(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) continue;
    int64_t src = shape_[i - lead];
    KOFF_CHECK(src == shape[i] || src == 1, "expand: cannot expand shape {} to {}", shape_str(shape_),
               shape_str(shape));
    t.strides_[i] = src == shape[i] ? strides_[i - lead] : 0;
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// element access
// ---------------------------------------------------------------------------------------------

double Tensor::item() const {
  KOFF_CHECK(numel() == 1, "item() of a tensor of shape {} (needs exactly one element)", shape_str(shape_));
  Tensor c = to(Device::cpu());
  return load(c.raw_data(), c.dtype_, 0);
}

double Tensor::at(const std::vector<int64_t>& index) const {
  KOFF_CHECK(device().is_cpu(), "at() on a {} tensor", device().str());
  KOFF_CHECK(static_cast<int64_t>(index.size()) == dim(), "at(): {} indices for shape {}", index.size(),
             shape_str(shape_));
  int64_t off = 0;
  for (size_t i = 0; i < index.size(); ++i) {
    KOFF_CHECK(index[i] >= 0 && index[i] < shape_[i], "at(): index {} out of range in shape {}", index[i],
               shape_str(shape_));
    off += index[i] * strides_[i];
  }
  return load(raw_data(), dtype_, off);
}

void Tensor::set(const std::vector<int64_t>& index, double value) {
  KOFF_CHECK(device().is_cpu(), "set() on a {} tensor", device().str());
  KOFF_CHECK(static_cast<int64_t>(index.size()) == dim(), "set(): {} indices for shape {}", index.size(),
             shape_str(shape_));
  int64_t off = 0;
  for (size_t i = 0; i < index.size(); ++i) {
    KOFF_CHECK(index[i] >= 0 && index[i] < shape_[i], "set(): index {} out of range in shape {}", index[i],
               shape_str(shape_));
    off += index[i] * strides_[i];
  }
  store(raw_data(), dtype_, off, value);
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = to(Device::cpu()).to(DTypeOf<T>::value).contiguous();
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

// ---------------------------------------------------------------------------------------------
// printer: PyTorch-like, summarising long dimensions with "..."
// ---------------------------------------------------------------------------------------------

namespace {

void print_rec(const Tensor& t, std::vector<int64_t>& idx, int64_t d, int64_t max_per_dim, int indent,
               std::string& out) {
  const int64_t n = t.shape()[d];
  const bool summarise = n > max_per_dim;
  const int64_t head = summarise ? max_per_dim / 2 : n;
  out += "[";
  for (int64_t i = 0; i < n; ++i) {
    if (summarise && i == head) {
      out += d + 1 == t.dim() ? "..., " : "...,\n" + std::string(indent + 1, ' ');
      i = n - (max_per_dim - head);
    }
    idx[d] = i;
    if (d + 1 == t.dim()) {
      double v = t.at(idx);
      out += is_floating(t.dtype()) ? fmt::format("{:.4g}", v) : fmt::format("{}", static_cast<int64_t>(v));
    } else {
      print_rec(t, idx, d + 1, max_per_dim, indent + 1, out);
    }
    if (i + 1 < n) out += d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' ');
  }
  out += "]";
}

}  // namespace

std::string Tensor::str(int64_t max_per_dim) const {
  if (!defined()) return "tensor(undefined)";
  Tensor c = to(Device::cpu());
  std::string body;
  if (dim() == 0) {
    body = fmt::format("{:.6g}", c.item());
  } else {
    std::vector<int64_t> idx(dim(), 0);
    if (numel() == 0) body = "[]";
    else print_rec(c, idx, 0, std::max<int64_t>(max_per_dim, 2), 7, body);
  }
  return fmt::format("tensor({}, shape={}, dtype={}, device={})", body, shape_str(shape_), dtype_name(dtype_),
                     device().str());
}

// ---------------------------------------------------------------------------------------------
// checks and comparisons
// ---------------------------------------------------------------------------------------------

void check_same_shape(const Tensor& a, const Tensor& b, const char* op) {
  KOFF_CHECK(a.shape() == b.shape(), "{}: shape mismatch, {} vs {}", op, shape_str(a.shape()), shape_str(b.shape()));
}
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  KOFF_CHECK(a.dtype() == b.dtype(), "{}: dtype mismatch, {} vs {}", op, dtype_name(a.dtype()), dtype_name(b.dtype()));
}
void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  KOFF_CHECK(a.device() == b.device(), "{}: device mismatch, {} vs {}", op, a.device().str(), b.device().str());
}
void check_dim(const Tensor& a, int64_t ndim, const char* op, const char* what) {
  KOFF_CHECK(a.dim() == ndim, "{}: {} must have {} dims, got shape {}", op, what, ndim, shape_str(a.shape()));
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  check_same_shape(a, b, "max_abs_diff");
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::abs(va[i] - vb[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    m = std::max(m, d);
  }
  return m;
}

double max_rel_error(const Tensor& a, const Tensor& b) {
  auto vb = b.to_vector<double>();
  double scale = 0;
  for (double v : vb) scale = std::max(scale, std::abs(v));
  double diff = max_abs_diff(a, b);
  return diff / std::max(scale, 1e-30);
}

bool has_non_finite(const Tensor& a) {
  for (double v : a.to_vector<double>())
    if (!std::isfinite(v)) return true;
  return false;
}

}  // namespace koff
