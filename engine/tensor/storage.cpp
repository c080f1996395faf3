#include "engine/tensor/storage.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace koff {

namespace {

// 64-byte aligned host memory: good for AVX-512 loads and a cache line per row start.
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, int) override {
    if (nbytes == 0) return nullptr;
    size_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) fail("out of host memory allocating {} bytes", nbytes);
    return p;
  }
  void deallocate(void* ptr, size_t, int) override { std::free(ptr); }
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) override {
    KOFF_CHECK(dst_device.is_cpu() && src_device.is_cpu(), "CPU allocator cannot copy {} -> {}",
               src_device.str(), dst_device.str());
    if (nbytes) std::memmove(dst, src, nbytes);
  }
  void memset_zero(void* ptr, size_t nbytes, int) override {
    if (nbytes) std::memset(ptr, 0, nbytes);
  }
};

CpuAllocator cpu_allocator;
Allocator* allocators[2] = {&cpu_allocator, nullptr};

}  // namespace

void register_allocator(DeviceType type, Allocator* allocator) {
  if (type == DeviceType::CPU && !allocator) allocator = &cpu_allocator;
  allocators[static_cast<int>(type)] = allocator;
}

bool has_allocator(DeviceType type) { return allocators[static_cast<int>(type)] != nullptr; }

Allocator& allocator_for(Device device) {
  Allocator* a = allocators[static_cast<int>(device.type)];
  if (!a) fail("no allocator for device {}: this build has no CUDA backend or no GPU is present", device.str());
  return *a;
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  Device owner = dst_device.is_cuda() ? dst_device : src_device;
  allocator_for(owner).copy(dst, dst_device, src, src_device, nbytes);
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  data_ = allocator_for(device).allocate(nbytes, device.index);
}

Storage::Storage(void* external, size_t nbytes, Device device, std::function<void()> release)
    : data_(external), nbytes_(nbytes), device_(device), release_(std::move(release)) {
  if (!release_) release_ = [] {};
}

Storage::~Storage() {
  if (release_) {
    release_();
  } else if (data_) {
    allocator_for(device_).deallocate(data_, nbytes_, device_.index);
  }
}

}  // namespace koff
