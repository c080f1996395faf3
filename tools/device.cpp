// `--device` for the commands that run a model (tools/cli.h), and the device communicator of GPU ranks.
#include <cstdlib>
#include <string>

#include "engine/dist/staged_communicator.h"
#include "engine/ops/emulated_device.h"
#include "engine/ops/dispatch.h"
#include "engine/tensor/error.h"
#include "tools/cli.h"
#ifdef KOFF_HAVE_CUDA
#include "cuda/device.h"
#endif
#ifdef KOFF_HAVE_NCCL
#include "engine/dist/nccl_communicator.h"
#endif

namespace koff::cli {

namespace {

// "cuda" -> -1 (pick), "cuda:N" -> N.
int parse_cuda(const std::string& name) {
  if (name == "cuda") return -1;
  if (name.rfind("cuda:", 0) == 0 && name.size() > 5 && name.find_first_not_of("0123456789", 5) == std::string::npos)
    return std::stoi(name.substr(5));
  fail("--device must be cpu, cuda or cuda:N, got '{}'", name);
}

// The GPU of this process among `visible` when the name did not say: one process, GPU 0; a rank of a
// data-parallel job, its local rank's, or 0 when the launcher shows each rank a single GPU.
int pick_gpu(int visible) {
  const dist::LaunchInfo launch = dist::detect_launch();
  if (launch.world_size <= 1 || visible == 1) return 0;
  KOFF_CHECK(launch.local_rank < visible,
             "--device cuda: rank {} ({}) has local rank {}, but this node shows {} GPUs: start at most one process "
             "per GPU",
             launch.rank, launch.launcher, launch.local_rank, visible);
  return launch.local_rank;
}

}  // namespace

Device select_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  const int asked = parse_cuda(name);
#ifdef KOFF_HAVE_CUDA
  if (cuda::register_if_available()) {
    const int visible = cuda::device_count();
    const int index = asked >= 0 ? asked : pick_gpu(visible);
    KOFF_CHECK(index < visible, "--device {}: this machine shows {} GPU(s) ({})", name, visible,
               cuda::describe_devices());
    cuda::set_current_device(index);
    return Device::cuda(index);
  }
  const std::string why = cuda::describe_devices();
#else
  const std::string why = "this koff was built without CUDA (no nvcc at configure time)";
#endif
  const char* emulate = std::getenv("KOFF_EMULATE_CUDA");
  if (emulate && std::string(emulate) == "1" && register_emulated_cuda()) {
    // The emulator has as many "GPUs" as asked: a rank gets its local rank's, as on a GPU node.
    const dist::LaunchInfo launch = dist::detect_launch();
    const int index = asked >= 0 ? asked : (launch.world_size > 1 ? launch.local_rank : 0);
    fmt::print(stderr, "koff: KOFF_EMULATE_CUDA=1: cuda:{} is the HOST EMULATOR (CPU kernels behind device "
                       "pointers; a test of the GPU path's plumbing, not a GPU)\n", index);
    return Device::cuda(index);
  }
  fail("--device {}: {}", name, why);
}

Device DeviceOptions::resolved_device() const { return select_device(device); }

DType DeviceOptions::resolved_dtype() const {
  KOFF_CHECK(dtype == "f32" || dtype == "bf16", "--dtype must be f32 or bf16, got '{}'", dtype);
  KOFF_CHECK(dtype == "f32" || device != "cpu",
             "--dtype bf16 needs --device cuda: the CPU backend computes in f32 (the reference)");
  return dtype == "bf16" ? DType::bf16 : DType::f32;
}

void add_device_options(CLI::App& sub, DeviceOptions& options) {
  sub.add_option("--device", options.device,
                 "cpu, or cuda (one GPU per process: GPU 0, or a data-parallel rank's local rank), or cuda:N")
      ->capture_default_str();
  sub.add_option("--dtype", options.dtype, "compute dtype of the model's weights: f32, or bf16 (cuda only)")
      ->capture_default_str();
}

std::unique_ptr<dist::Communicator> make_device_communicator(dist::Communicator& host, Device device) {
  KOFF_CHECK(device.is_cuda(), "make_device_communicator: {} is not a GPU", device.str());
  const char* env = std::getenv("KOFF_DIST_DEVICE");
  const std::string want = env ? env : "";
  KOFF_CHECK(want.empty() || want == "nccl" || want == "staged", "KOFF_DIST_DEVICE must be nccl or staged, got '{}'",
             want);
  const bool emulated = backend_for(device).host_memory;
#ifdef KOFF_HAVE_NCCL
  if (want != "staged" && !emulated) return cuda::make_nccl(host, device.index);
  const char* no_nccl = "the device is the host emulator, which NCCL cannot drive";
#else
  const char* no_nccl = "this koff was built without NCCL (bench/gpu_check.sh --plan says where it looks)";
#endif
  KOFF_CHECK(want != "nccl", "{}: KOFF_DIST_DEVICE=nccl: {}", host.where(), no_nccl);
  if (!emulated && want.empty() && host.is_root())
    fmt::print(stderr, "koff: {}: gradient buckets go through the host (host-staged all-reduce over {})\n", no_nccl,
               host.backend());
  return dist::make_host_staged(host, device);
}

}  // namespace koff::cli
