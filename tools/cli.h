// The `koff` command line: the tools/cmd_*.cpp files (each holds one or a few related commands)
// register their commands with add_command() at static-initialisation time; main.cpp holds the
// registry and dispatches, so adding a command never touches main.cpp.
//
//   static const bool registered = koff::cli::add_command({"tokenize", "text to ids, or back",
//       [](CLI::App& sub) { ...add options...; return [=] { ...run...; return 0; }; }});
//
// A command's run function returns the process exit status. Errors are thrown (koff::Error or any
// std::exception); main() prints them as one line and exits 2.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/tensor/dtype.h"

namespace koff::cli {

using RunFn = std::function<int()>;

struct Command {
  std::string name;
  std::string description;
  // Adds the command's options to `sub` and returns the function that runs it once parsed.
  std::function<RunFn(CLI::App& sub)> setup;
};

bool add_command(Command command);
const std::vector<Command>& commands();

// `--device`: "cpu", "cuda" or "cuda:N". For cuda it registers the CUDA backend of a real GPU and makes
// the GPU current; on a machine without one, KOFF_EMULATE_CUDA=1 registers the host emulator instead
// (engine/ops/emulated_device.h: for tests of the GPU path's plumbing; it says so on stderr).
// Otherwise an error says why there is no GPU. Which GPU "cuda" means: GPU 0 for one process; for a
// rank of a data-parallel job (mpirun, torchrun, Slurm variables), the GPU of its local rank, or GPU
// 0 when the launcher shows each process one GPU (CUDA_VISIBLE_DEVICES per rank).
Device select_device(const std::string& name);

// The communicator of the gradient buckets of a data-parallel job whose model is on `device` (a
// GPU): NCCL where koff was built with it and the GPU is real; otherwise the host-staged one over
// `host` (engine/dist/staged_communicator.h), which is also what the device emulator gets.
// KOFF_DIST_DEVICE=nccl|staged forces the choice (nccl fails where it cannot be had).
std::unique_ptr<dist::Communicator> make_device_communicator(dist::Communicator& host, Device device);

// `--device` and `--dtype` of every command that runs a model (offload, demo, eval, generate).
struct DeviceOptions {
  std::string device = "cpu", dtype = "f32";
  Device resolved_device() const;  // select_device(device)
  DType resolved_dtype() const;    // f32, or bf16 (cuda only); errors name the option
};
void add_device_options(CLI::App& sub, DeviceOptions& options);

}  // namespace koff::cli
