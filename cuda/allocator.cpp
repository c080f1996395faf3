// Caching device allocator.
//
// cudaMalloc/cudaFree synchronise the device and cost tens of microseconds, so a training step must
// never call them on its hot path. Freed blocks are kept in per-device free lists keyed by rounded
// size and handed out again; memory goes back to the driver only on release_cached() or at exit.
// Sizes round up to 512 bytes below 1 MiB and to 2 MiB above, which bounds fragmentation while
// letting the same activation shapes step after step hit the cache exactly.
//
// Blocks go back to the free list when their last tensor dies on the host, possibly while a kernel
// that reads them is still queued. That is safe because every kernel and copy of a device is ordered
// on one stream (cuda/context.h): a later user of the block runs after the earlier one.
//
// Also here: the per-device stream and error flag (context.h), and registration of the backend.
#include <atomic>
#include <map>
#include <mutex>
#include <vector>

#include "cuda/backend.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/device.h"
#include "engine/tensor/storage.h"

namespace koff::cuda {

namespace {

std::atomic<bool> poison{false};

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
      if (poison) KOFF_CUDA_CHECK(cudaMemset(p, 0xFF, size));
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
    if (poison) KOFF_CUDA_CHECK(cudaMemset(p, 0xFF, size));
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

  bool copy_strided(void* dst, DType dst_dtype, const int64_t* dst_strides, const void* src, DType src_dtype,
                    const int64_t* src_strides, const int64_t* shape, int ndim, int device) override {
    if (ndim > kMaxCopyDims) return false;
    DeviceGuard guard(device);
    cuda::strided_copy(dst, static_cast<int>(dst_dtype), dst_strides, src, static_cast<int>(src_dtype), src_strides,
                       shape, ndim, 0, 0, stream(device));
    return true;
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

struct DeviceContext {
  cudaStream_t stream = nullptr;
  int* flag = nullptr;
};
std::mutex context_mutex;
std::map<int, DeviceContext>& contexts() {
  static auto* m = new std::map<int, DeviceContext>;  // never destroyed: the driver may be gone at exit
  return *m;
}
DeviceContext& context(int device) {
  std::lock_guard<std::mutex> lock(context_mutex);
  DeviceContext& c = contexts()[device];
  if (!c.stream) {
    DeviceGuard guard(device);
    KOFF_CUDA_CHECK(cudaStreamCreate(&c.stream));
    KOFF_CUDA_CHECK(cudaMalloc(&c.flag, sizeof(int)));
    KOFF_CUDA_CHECK(cudaMemset(c.flag, 0, sizeof(int)));
  }
  return c;
}

}  // namespace

cudaStream_t stream(int device) { return context(device).stream; }
void* compute_stream(int device) { return static_cast<void*>(stream(device)); }
void set_current_device(int device) { KOFF_CUDA_CHECK(cudaSetDevice(device)); }
int* error_flag(int device) { return context(device).flag; }

DeviceGuard::DeviceGuard(int device) : device_(device) {
  KOFF_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device_) KOFF_CUDA_CHECK(cudaSetDevice(device_));
}
DeviceGuard::~DeviceGuard() {
  if (previous_ != device_) (void)cudaSetDevice(previous_);
}

void check_error_flag(int device, const char* op) {
  DeviceContext& c = context(device);
  int flag = 0;
  KOFF_CUDA_CHECK(cudaMemcpyAsync(&flag, c.flag, sizeof(int), cudaMemcpyDeviceToHost, c.stream));
  KOFF_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  if (flag) {
    KOFF_CUDA_CHECK(cudaMemsetAsync(c.flag, 0, sizeof(int), c.stream));
    throw Error(std::string(op) + ": an index (embedding id or cross-entropy target) was out of range on cuda:" +
                std::to_string(device));
  }
}

void synchronize(int device) {
  DeviceGuard guard(device);
  check_error_flag(device, "cuda::synchronize");
}

void set_poison_allocations(bool on) { poison = on; }

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
    register_backend(DeviceType::CUDA, &cuda_backend());
    return true;
  }();
  return registered;
}

}  // namespace koff::cuda
