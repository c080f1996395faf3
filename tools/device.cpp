// `--device` for the commands that run a model (tools/cli.h).
#include <cstdlib>
#include <string>

#include "engine/ops/emulated_device.h"
#include "engine/tensor/error.h"
#include "tools/cli.h"
#ifdef KOFF_HAVE_CUDA
#include "cuda/device.h"
#endif

namespace koff::cli {

Device select_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  KOFF_CHECK(name == "cuda" || name == "cuda:0", "--device must be cpu or cuda (one GPU: cuda:0), got '{}'", name);
#ifdef KOFF_HAVE_CUDA
  if (cuda::register_if_available()) return Device::cuda(0);
  const std::string why = cuda::describe_devices();
#else
  const std::string why = "this koff was built without CUDA (no nvcc at configure time)";
#endif
  const char* emulate = std::getenv("KOFF_EMULATE_CUDA");
  if (emulate && std::string(emulate) == "1" && register_emulated_cuda()) {
    fmt::print(stderr, "koff: KOFF_EMULATE_CUDA=1: cuda:0 is the HOST EMULATOR (CPU kernels behind device "
                       "pointers; a test of the GPU path's plumbing, not a GPU)\n");
    return Device::cuda(0);
  }
  fail("--device cuda: {}", why);
}

Device DeviceOptions::resolved_device() const { return select_device(device); }

DType DeviceOptions::resolved_dtype() const {
  KOFF_CHECK(dtype == "f32" || dtype == "bf16", "--dtype must be f32 or bf16, got '{}'", dtype);
  KOFF_CHECK(dtype == "f32" || device != "cpu",
             "--dtype bf16 needs --device cuda: the CPU backend computes in f32 (the reference)");
  return dtype == "bf16" ? DType::bf16 : DType::f32;
}

void add_device_options(CLI::App& sub, DeviceOptions& options) {
  sub.add_option("--device", options.device, "cpu, or cuda (one GPU)")->capture_default_str();
  sub.add_option("--dtype", options.dtype, "compute dtype of the model's weights: f32, or bf16 (cuda only)")
      ->capture_default_str();
}

}  // namespace koff::cli
