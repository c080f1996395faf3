#include "engine/ops/emulated_device.h"

#include <cstdlib>
#include <cstring>

#include "engine/cpu/cpu_backend.h"
#include "engine/tensor/backend.h"

namespace koff {

namespace {

constexpr uintptr_t kTag = (uintptr_t{1} << 62) | (uintptr_t{1} << 55);
void* tag(void* p) { return p ? reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) | kTag) : nullptr; }
void* untag(const void* p) { return p ? reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) & ~kTag) : nullptr; }
void* host_ptr(const void* p, Device d) { return d.is_cuda() ? untag(p) : const_cast<void*>(p); }

class EmulatedAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, int) override {
    if (nbytes == 0) return nullptr;
    void* p = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
    if (!p) fail("emulated cuda: out of host memory allocating {} bytes", nbytes);
    return tag(p);
  }
  void deallocate(void* ptr, size_t, int) override { std::free(untag(ptr)); }
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) override {
    if (nbytes) std::memmove(host_ptr(dst, dst_device), host_ptr(src, src_device), nbytes);
  }
  void memset_zero(void* ptr, size_t nbytes, int) override {
    if (nbytes) std::memset(untag(ptr), 0, nbytes);
  }
  bool copy_strided(void* dst, DType dst_dtype, const int64_t* dst_strides, const void* src, DType src_dtype,
                    const int64_t* src_strides, const int64_t* shape, int ndim, int) override {
    copy_strided_host(untag(dst), dst_dtype, dst_strides, untag(src), src_dtype, src_strides, shape, ndim);
    return true;
  }
};

}  // namespace

HostCall::~HostCall() {
  for (auto& [host, device] : writeback_) {
    Tensor rounded = host.to(DType::bf16);
    std::memcpy(untag(device.raw_data()), rounded.raw_data(), rounded.nbytes());
  }
}

Tensor HostCall::view(const Tensor& t, bool written) {
  if (!t.defined()) return Tensor();
  KOFF_CHECK(t.device().is_cuda(), "emulated cuda: a {} tensor reached the cuda backend", t.device().str());
  KOFF_CHECK(t.is_contiguous(), "emulated cuda: a backend received a non-contiguous tensor");
  KOFF_CHECK(t.dtype() != DType::f64 && t.dtype() != DType::f16,
             "the CUDA backend computes in f32 or bf16 (f32 math), got {}", dtype_name(t.dtype()));
  const size_t bytes = t.nbytes();
  auto storage = std::make_shared<Storage>(untag(t.raw_data()), bytes, Device::cpu(), [] {});
  Tensor raw = Tensor::from_storage(storage, t.shape(), t.dtype());
  if (t.dtype() != DType::bf16) return raw;
  Tensor wide = raw.to(DType::f32);
  if (written) writeback_.emplace_back(wide, t);
  return wide;
}

namespace {

bool emulated = false;

}  // namespace

bool register_emulated_cuda() {
  if (emulated) return true;
  if (registered_backend(DeviceType::CUDA)) return false;  // a real GPU: never emulate over it
  static EmulatedAllocator allocator;
  static Backend backend = [] {
    Backend b;
    b.name = "cuda (emulated on the host)";
    b.host_memory = true;
    b.host_kernels = &cpu_backend();
    return b;
  }();
  register_allocator(DeviceType::CUDA, &allocator);
  register_backend(DeviceType::CUDA, &backend);
  emulated = true;
  return true;
}

}  // namespace koff
