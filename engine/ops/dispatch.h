// The one door every op goes through on its way to a kernel.
//
//   ops::rmsnorm(x, w, eps)                       engine/ops/norm.cpp: checks, contiguity, outputs
//     -> launch(x.device(), {"rmsnorm", bytes}, &Backend::rmsnorm, x, w, eps, y, rstd)
//          interrupt check (Ctrl-C inside a step), the device's Backend table (engine/tensor/backend.h),
//          "op rmsnorm is not implemented on backend cuda" when its entry is null,
//          a profile mark pair around the call while profiling (engine/ops/profile.h),
//          host views of every tensor on the CUDA emulator (engine/ops/emulated_device.h)
//       -> the entry: engine/cpu/norm.cpp on the CPU, cuda/norm.cu on a GPU.
#pragma once

#include <initializer_list>
#include <utility>

#include "engine/ops/emulated_device.h"
#include "engine/ops/profile.h"
#include "engine/tensor/backend.h"
#include "engine/tensor/interrupt.h"

namespace koff {

// The backend that runs tensors of this device: the registered one, or the built-in CPU backend;
// throws if there is none (e.g. CUDA not built, no GPU and no emulator).
const Backend& backend_for(Device device);
bool has_backend(DeviceType type);

// Counts GEMMs, for tests that assert work is NOT done (e.g. a frozen weight must cost no
// weight-gradient GEMM). Incremented by ops/, read and reset by tests.
struct OpCounters {
  int64_t gemm = 0;
  int64_t gemm_flops = 0;
};
OpCounters& op_counters();

}  // namespace koff

namespace koff::ops::detail {

// What the profiler notes about one op call: its name, the bytes its tensors hold (what a
// memory-bound op must move at least once) and its useful FLOPs (0 for memory-bound ops).
struct OpCall {
  const char* name;
  double bytes = 0;
  double flops = 0;
};

inline double bytes_of(std::initializer_list<const Tensor*> ts) {
  double b = 0;
  for (const Tensor* t : ts)
    if (t && t->defined()) b += static_cast<double>(t->nbytes());
  return b;
}

// Calls the `entry` of the backend of `device` with `args`.
template <typename Fn, typename... Args>
decltype(auto) launch(Device device, const OpCall& call, Fn Backend::*entry, Args&&... args) {
  check_interrupt("a computation");
  const Backend& backend = backend_for(device);
  const Backend& kernels = backend.host_kernels ? *backend.host_kernels : backend;
  const Fn fn = kernels.*entry;
  KOFF_CHECK(fn != nullptr, "op {} is not implemented on backend {}", call.name, backend.name);
  const profile::Scope timed(backend, call.name, call.bytes, call.flops);
  if (backend.host_kernels) {
    HostCall host;
    return host.call(fn, std::forward<Args>(args)...);
  }
  return fn(std::forward<Args>(args)...);
}

}  // namespace koff::ops::detail
