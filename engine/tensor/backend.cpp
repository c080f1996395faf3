#include "engine/tensor/backend.h"

#include <chrono>

namespace koff {

namespace {
// Constant-initialised (all null): safe to use from any static initialiser.
const Backend* backends[2] = {nullptr, nullptr};
}  // namespace

void register_backend(DeviceType type, const Backend* backend) { backends[static_cast<int>(type)] = backend; }

const Backend* registered_backend(DeviceType type) { return backends[static_cast<int>(type)]; }

uint64_t Backend::host_clock_mark() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

double Backend::host_clock_elapsed_ms(uint64_t start, uint64_t stop) {
  return static_cast<double>(stop - start) * 1e-6;
}

}  // namespace koff
