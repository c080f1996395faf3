// Storage: one contiguous allocation on one device, shared by all tensor views of it.
//
// Memory comes from an Allocator registered per device type. The CPU allocator is built in; the CUDA
// backend (cuda/) registers its caching allocator when it is linked in and a GPU is present. Storage
// can also wrap memory it does not own (an mmap'd safetensors file) with a release callback.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "engine/tensor/dtype.h"

namespace koff {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes, int device_index) = 0;
  virtual void deallocate(void* ptr, size_t nbytes, int device_index) = 0;
  // Copies nbytes between any two devices of which at least one is this allocator's type.
  virtual void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) = 0;
  virtual void memset_zero(void* ptr, size_t nbytes, int device_index) = 0;
  // Copies a strided view into another on this allocator's device (both pointers on `device_index`),
  // converting the element type; shape and strides in elements, ndim dims. Returns false when this
  // allocator cannot (the caller then moves the bytes through the host). The CUDA allocator does it
  // with a kernel, so contiguous(), transposes and dtype casts of device tensors stay on the device.
  virtual bool copy_strided(void* /*dst*/, DType /*dst_dtype*/, const int64_t* /*dst_strides*/, const void* /*src*/,
                            DType /*src_dtype*/, const int64_t* /*src_strides*/, const int64_t* /*shape*/,
                            int /*ndim*/, int /*device_index*/) {
    return false;
  }
};

// Registers the allocator for a device type (the CUDA backend does this). Not thread-safe: call at
// start-up. Passing nullptr unregisters.
void register_allocator(DeviceType type, Allocator* allocator);
// The allocator for a device; throws koff::Error if that device type has none (e.g. CUDA not built).
Allocator& allocator_for(Device device);
bool has_allocator(DeviceType type);

// Copies bytes between devices through the right allocator.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

class Storage {
 public:
  Storage(size_t nbytes, Device device);  // uninitialised memory
  // Wraps external memory; `release` runs when the last view is gone (e.g. munmap).
  Storage(void* external, size_t nbytes, Device device, std::function<void()> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  std::function<void()> release_;  // set for external memory
};

}  // namespace koff
