// Entry points of the CUDA backend that the host side (tools/, tests/, bench/) calls.
#pragma once

#include <string>

namespace koff::cuda {

// Number of usable GPUs; 0 when there is no driver, no device, or the driver is too old for this
// runtime (as on the CPU-only build machines). Never throws.
int device_count();

// Registers the CUDA caching allocator and the CUDA backend (cuda/backend.cpp) for DeviceType::CUDA
// when a GPU is present. Returns whether it did. Safe to call more than once.
bool register_if_available();

// One line describing the GPUs, or why there are none ("no GPU: <driver error>").
std::string describe_devices();

// The GPU of this process: makes `device` current for the host thread (cudaSetDevice), so that the
// runtime calls that take no device (cudaMemcpy, cudaMemset, events) act on it. Data-parallel ranks
// call it once, before any allocation, with the GPU picked from their local rank (tools/device.cpp).
void set_current_device(int device);

// The stream every kernel and copy of `device` runs on (cuda/context.h), as an opaque pointer for
// code outside cuda/ (a cudaStream_t): the NCCL communicator orders its collectives after it.
void* compute_stream(int device);

// Waits for all work queued on the backend's stream of `device`, then raises any device-side index
// error as koff::Error.
void synchronize(int device = 0);

// Test aid: while on, every block the caching allocator hands out is first filled with 0xFF bytes
// (NaN in f32 and bf16), so an output a kernel fails to write shows up as NaN.
void set_poison_allocations(bool on);

// Per-op profiling is backend-neutral: engine/ops/profile.h (this backend's marks are CUDA events
// on its stream; NVTX ranges are always there, for Nsight). The ops themselves go through engine/ops
// (e.g. ops::adamw_multi_, one launch per 64 f32 tensors on this backend).

}  // namespace koff::cuda
