// Per-op profiling on any backend (`koff offload --profile`, bench/cuda/gpu_bench.cpp).
//
// While enabled, the ops dispatch (engine/ops/dispatch.h) brackets every op call with two marks in
// the device's queue of work (Backend::profile_mark: CUDA events on the CUDA backend's stream, host
// clock readings on the CPU) and notes the bytes the call's tensors hold (inputs and outputs: what a
// memory-bound op must move at least once) and its useful FLOPs (GEMMs, attention, the lm_head of the
// fused cross-entropy; a backward counts its own products, not the recomputation), as each op states
// them in its engine/ops/<family>.cpp. collect() waits for the marks and sums them per op name.
//
// Timing with marks adds a little host work per op and, on the CPU, nothing else; on CUDA the events
// are pooled and recorded asynchronously, so the GPU timeline is the one of an unprofiled step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor/backend.h"

namespace koff::profile {

struct OpTotal {
  std::string name;
  int64_t calls = 0;
  double ms = 0;     // summed device time between the op's marks
  double bytes = 0;  // summed bytes of the op's tensors
  double flops = 0;  // summed useful floating-point operations
};

void set_enabled(bool on);
bool enabled();
// Waits for the marks of every op run while enabled, returns the totals (largest time first) and
// forgets them.
std::vector<OpTotal> collect();

// Two marks around one op call on `backend`, noted under `name` (nothing while profiling is off).
class Scope {
 public:
  Scope(const Backend& backend, const char* name, double bytes, double flops);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const Backend* backend_;  // null while profiling is off
  const char* name_;
  double bytes_, flops_;
  uint64_t start_ = 0;
};

// Measured ceilings of a device, in the same run as the figures they judge: copy bandwidth (bytes
// read + written per second by a device-to-device copy of `copy_bytes`) and the FLOP rate of one
// square GEMM of size n in `dtype`.
struct Ceilings {
  double copy_bytes_per_s = 0, gemm_flops_per_s = 0;
  int64_t gemm_n = 0;
  std::string gemm_dtype;
};
Ceilings measure_ceilings(Device device, DType dtype, size_t copy_bytes, int64_t gemm_n);

// The profile of one step as a table (op, calls, ms, share, GB/s, TFLOP/s), then the step's MFU and
// achieved bandwidth against `ceilings`: useful FLOPs of every op over the step time, and bytes of
// the memory-bound ops (those with no FLOPs counted) over their own time.
std::string format_step_profile(const std::vector<OpTotal>& ops, double step_ms, int64_t tokens,
                                const Ceilings& ceilings, const std::string& device);

}  // namespace koff::profile
