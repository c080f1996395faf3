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
//     f32 for it and rounded back after (the CUDA backend's contract: bf16 storage, f32 math).
// It checks the plumbing, not the CUDA kernels: those are checked op by op against the CPU backend
// by the harness, on a real GPU (bench/gpu_check.sh).
//
// Opt-in only, and never when a real GPU is registered: tests call register_emulated_cuda(); the CLI
// honours KOFF_EMULATE_CUDA=1 (tools/cli.h: `--device cuda` on a machine without a GPU).
#pragma once

namespace koff {

// Registers the emulator for DeviceType::CUDA unless a CUDA backend is already registered. Returns
// whether the emulator is (now) the CUDA device.
bool register_emulated_cuda();
bool cuda_is_emulated();

}  // namespace koff
