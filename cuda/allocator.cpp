// Caching device allocator.
//
// cudaMalloc/cudaFree synchronise the device and cost tens of microseconds, so a training step must
// never call them on its hot path. Freed blocks are kept in per-device free lists keyed by rounded
// size and handed out again; memory goes back to the driver only on release_cached() or at exit.
// Sizes round up to 512 bytes below 1 MiB and to 2 MiB above, which bounds fragmentation while
// letting the same activation shapes step after step hit the cache exactly.
#include <map>
#include <mutex>
#include <vector>

#include "cuda/check.h"
#include "cuda/device.h"
#include "engine/tensor/storage.h"

namespace koff::cuda {

namespace {

size_t round_size(size_t n) {
  constexpr size_t small = 512, large = size_t(2) << 20;
  return n < (size_t(1) << 20) ? (n + small - 1) / small * small : (n + large - 1) / large * large;
}

class CachingAllocator final : public Allocator {
 public:
  ~CachingAllocator() override { release_cached(); }

  void* allocate(size_t nbytes, int device) override {
    if (nbytes == 0) return nullptr;
    const size_t size = round_size(nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    auto& pool = free_[device];
    auto it = pool.find(size);
    if (it != pool.end()) {
      void* p = it->second;
      pool.erase(it);
      return p;
    }
    int previous;
    KOFF_CUDA_CHECK(cudaGetDevice(&previous));
    KOFF_CUDA_CHECK(cudaSetDevice(device));
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {  // give the cache back and try once more
      (void)cudaGetLastError();
      release_locked(device);
      err = cudaMalloc(&p, size);
    }
    KOFF_CUDA_CHECK(err);
    KOFF_CUDA_CHECK(cudaSetDevice(previous));
    return p;
  }

  void deallocate(void* ptr, size_t nbytes, int device) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    free_[device].emplace(round_size(nbytes), ptr);
  }

  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) override {
    if (nbytes == 0) return;
    cudaMemcpyKind kind = dst_device.is_cuda() ? (src_device.is_cuda() ? cudaMemcpyDeviceToDevice
                                                                         : cudaMemcpyHostToDevice)
                                               : cudaMemcpyDeviceToHost;
    KOFF_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, kind));
  }

  void memset_zero(void* ptr, size_t nbytes, int) override {
    if (nbytes) KOFF_CUDA_CHECK(cudaMemset(ptr, 0, nbytes));
  }

  void release_cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [device, pool] : free_) release_locked(device);
  }

 private:
  void release_locked(int device) {
    for (auto& [size, p] : free_[device]) cudaFree(p);  // at exit the driver may be gone: ignore
    free_[device].clear();
  }

  std::mutex mutex_;
  std::map<int, std::multimap<size_t, void*>> free_;
};

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

std::string describe_devices() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("no GPU: ") + cudaGetErrorString(err);
  }
  std::string s;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    s += (i ? "; cuda:" : "cuda:") + std::to_string(i) + " " + p.name + " (sm_" + std::to_string(p.major) +
         std::to_string(p.minor) + ", " + std::to_string(p.totalGlobalMem >> 30) + " GiB)";
  }
  return n ? s : "no GPU: no CUDA device";
}

bool register_if_available() {
  static const bool registered = [] {
    if (device_count() == 0) return false;
    static CachingAllocator allocator;  // lives to process exit: tensors may outlive any scope
    register_allocator(DeviceType::CUDA, &allocator);
    return true;
  }();
  return registered;
}

}  // namespace koff::cuda
