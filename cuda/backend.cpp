// The CUDA backend's table (engine/tensor/backend.h): every family file fills its entries
// (cuda/backend.h lists them); here are the device services, the profiling marks and synchronize.
// A mark is a CUDA event recorded on the current device's stream; events come from a pool and go back
// to it on release_marks().
#include "cuda/backend.h"

#include <mutex>
#include <vector>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/device.h"

namespace koff::cuda {

namespace {

struct Marks {
  std::mutex mutex;
  std::vector<cudaEvent_t> events;  // mark i is events[i]
  size_t used = 0;
};
Marks& marks() {
  static auto* m = new Marks;  // never destroyed: the driver may be gone at exit
  return *m;
}

uint64_t profile_mark() {
  int device = 0;
  KOFF_CUDA_CHECK(cudaGetDevice(&device));
  Marks& mk = marks();
  std::lock_guard<std::mutex> lock(mk.mutex);
  if (mk.used == mk.events.size()) {
    cudaEvent_t e;
    KOFF_CUDA_CHECK(cudaEventCreate(&e));
    mk.events.push_back(e);
  }
  KOFF_CUDA_CHECK(cudaEventRecord(mk.events[mk.used], stream(device)));
  return mk.used++;
}

double profile_elapsed_ms(uint64_t start, uint64_t stop) {
  Marks& mk = marks();
  std::lock_guard<std::mutex> lock(mk.mutex);
  KOFF_CHECK(start < mk.used && stop < mk.used, "profile_elapsed_ms: unknown marks {} and {}", start, stop);
  KOFF_CUDA_CHECK(cudaEventSynchronize(mk.events[stop]));
  float ms = 0;
  KOFF_CUDA_CHECK(cudaEventElapsedTime(&ms, mk.events[start], mk.events[stop]));
  return ms;
}

void release_marks() {
  Marks& mk = marks();
  std::lock_guard<std::mutex> lock(mk.mutex);
  mk.used = 0;
}

// Waits for the current device's stream, then raises any device-side index error (cuda/device.h).
void synchronize_current() {
  int device = 0;
  KOFF_CUDA_CHECK(cudaGetDevice(&device));
  synchronize(device);
}

}  // namespace

const Backend& cuda_backend() {
  static const Backend backend = [] {
    Backend b;
    b.name = "cuda";
    b.host_memory = false;
    for (auto fill : {fill_elementwise, fill_gemm, fill_embedding, fill_norm, fill_rope, fill_attention, fill_loss,
                      fill_gates, fill_adamw})
      fill(b);
    b.profile_mark = profile_mark;
    b.profile_elapsed_ms = profile_elapsed_ms;
    b.release_marks = release_marks;
    b.synchronize = synchronize_current;
    return b;
  }();
  return backend;
}

}  // namespace koff::cuda
