// Per-device state shared by the CUDA allocator and backend (internal to cuda/): the stream every
// kernel and copy of the device runs on, and the device-side error flag. Host-only.
#pragma once

#include <cuda_runtime.h>

namespace koff::cuda {

// The backend's stream for a device: created once (blocking, so it stays ordered with the legacy
// default stream that cudaMemcpy/cudaMemset use).
cudaStream_t stream(int device);

// Makes `device` current for the lifetime of the guard (no call when it already is).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1, device_ = -1;
};

// A device int set to nonzero by a kernel that met an out-of-range index (an id >= vocab, a target
// outside [0, V) that is not ignore_index; the kernel skips it); 0 when clean. One per device.
int* error_flag(int device);

// Reads and clears the device's error flag after synchronising the stream; throws koff::Error naming
// `op` when a kernel reported an out-of-range index.
void check_error_flag(int device, const char* op);

}  // namespace koff::cuda
