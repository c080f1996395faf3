// A host emulation of the CUDA device, for testing on machines without a GPU.
//
// CI has no GPU, yet the GPU training path (the model's weights, the trainables, the optimizer state
// and every activation on `cuda:0`; bf16 compute with f32 master trainables) has host-side plumbing
// that can go wrong without any kernel being wrong: a host read of a device pointer, a tensor left on
// the CPU, a dtype mix-up. The emulator registers an allocator and a backend for DeviceType::CUDA
// that make those mistakes fail loudly here:
//   - device memory is host memory whose pointers are TAGGED (bits 62 and 55 set: a non-canonical
//     address on x86-64, a kernel-half address on AArch64), so any host dereference of a device
//     pointer crashes at once instead of silently working;
//   - every op runs the CPU backend's kernel on the untagged memory, bf16 tensors being widened to
//     f32 for it and rounded back after (the CUDA backend's contract: bf16 storage, f32 math). The
//     emulated backend has no kernels of its own: its table says `host_kernels = the CPU table`, and
//     the ops dispatch (engine/ops/dispatch.h) maps every tensor argument through a HostCall.
// It checks the plumbing, not the CUDA kernels: those are checked op by op against the CPU backend
// by the harness, on a real GPU (bench/gpu_check.sh).
//
// Opt-in only, and never when a real GPU is registered: tests call register_emulated_cuda(); the CLI
// honours KOFF_EMULATE_CUDA=1 (tools/device.cpp: `--device cuda` on a machine without a GPU).
#pragma once

#include <deque>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/tensor/tensor.h"

namespace koff {

// Registers the emulator for DeviceType::CUDA unless a CUDA backend is already registered. Returns
// whether the emulator is (now) the CUDA device.
bool register_emulated_cuda();

// The host tensors of one emulated op call. Each argument is mapped by the type of the entry's
// parameter it is passed to: a `const Tensor&` becomes a view of the untagged memory (bf16 widened to an
// f32 copy), a `Tensor&` likewise and, if bf16, is written back (rounded) when the call ends; lists of
// tensors map element by element; other arguments pass through.
class HostCall {
 public:
  HostCall() = default;
  HostCall(const HostCall&) = delete;
  HostCall& operator=(const HostCall&) = delete;
  ~HostCall();

  // Calls fn with every argument mapped.
  template <typename R, typename... P, typename... Args>
  R call(R (*fn)(P...), Args&&... args) {
    return fn(map<P>(std::forward<Args>(args))...);
  }

 private:
  template <typename P, typename A>
  decltype(auto) map(A&& a) {
    if constexpr (std::is_same_v<P, Tensor&>) {
      return (keep(view(a, true)));
    } else if constexpr (std::is_same_v<P, const Tensor&>) {
      return (static_cast<const Tensor&>(keep(view(a, false))));
    } else if constexpr (std::is_same_v<P, const std::vector<Tensor*>&>) {
      std::vector<Tensor*> r;
      for (Tensor* t : a) r.push_back(&keep(view(*t, true)));
      return r;
    } else if constexpr (std::is_same_v<P, const std::vector<const Tensor*>&>) {
      std::vector<const Tensor*> r;
      for (const Tensor* t : a) r.push_back(&keep(view(*t, false)));
      return r;
    } else {
      return std::forward<A>(a);
    }
  }
  Tensor view(const Tensor& t, bool written);
  Tensor& keep(Tensor t) {
    kept_.push_back(std::move(t));
    return kept_.back();
  }
  std::deque<Tensor> kept_;
  std::vector<std::pair<Tensor, Tensor>> writeback_;
};

}  // namespace koff
