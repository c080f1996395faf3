// Device buffers reduced through a host communicator: the data-parallel path for GPU ranks where
// NCCL is absent, and the one that makes the whole multi-rank GPU path testable on the device
// emulator (engine/ops/emulated_device.h) on a machine without a GPU.
//
// Each collective copies the device buffer to a host buffer (a copy that waits for the kernels that
// produced it: the allocator's device-to-host copy is ordered after the compute stream), runs the
// host communicator's collective on that copy (MPI or the TCP star, on their own thread, so the
// backward goes on meanwhile), and wait() copies the sum back into the device buffer before it
// returns. It is the same Communicator interface the NCCL communicator implements, and the
// trainer's GradReducer drives both through the same code (engine/dist/grad_reducer.h).
//
// Cost against NCCL: every bucket crosses PCIe twice and the host network once, and the launch
// waits for the GPU to reach the bucket's last gradient. Fine for the trainables of a KOFF run (LoRA,
// KV memories and gates: tens of MB); use NCCL for speed.
#pragma once

#include <memory>

#include "engine/dist/communicator.h"
#include "engine/tensor/dtype.h"

namespace koff::dist {

// A communicator for buffers on `device` (the same ranks as `host`, which must outlive it). Its
// backend() is "<host's>+staged", e.g. "mpi+staged".
std::unique_ptr<Communicator> make_host_staged(Communicator& host, Device device);

}  // namespace koff::dist
