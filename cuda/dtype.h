// The element type a CUDA kernel reads and writes: f32, or bf16 storage with f32 math. Plain C++:
// host code, the kernel files and the CPU emulator of tests/cuda_emu all include it.
#pragma once

namespace koff::cuda {

enum class Dt { f32, bf16 };

}  // namespace koff::cuda
