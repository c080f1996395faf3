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

}  // namespace koff::cli
