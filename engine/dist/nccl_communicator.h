// NCCL as a Communicator: the gradient all-reduce between GPUs (NVLink inside a node, InfiniBand
// between nodes), one process per GPU (device = local rank).
//
// Collectives run on the communicator's own stream, ordered after the kernels that produced their
// buffers by an event recorded on the compute stream (the CUDA backend's stream of the device unless
// set_compute_stream says otherwise), so the backward of earlier layers keeps the GPU busy while a
// bucket is on the wire; the event that ends a collective is recorded only once NCCL has enqueued it
// (a non-blocking communicator may return ncclInProgress first), and wait() makes the compute stream
// wait for it. Buffers stay alive until wait() (Communicator::all_reduce_sum_async(Tensor&)), so the
// caching allocator, whose safety rests on one stream per device, never hands out memory the NCCL
// stream may still touch; the NCCL stream runs no cuBLASLt call, so the per-device workspace is not
// shared with it.
// A handle's wait() polls the completion event and NCCL's asynchronous error state; past
// KOFF_DIST_TIMEOUT it aborts the NCCL communicator (ncclCommAbort: a dead peer cannot hang us) and
// throws, naming the collective and the rank.
//
// Bootstrap: NCCL's unique id comes from rank 0, over any host communicator (MPI broadcast under
// mpirun, the TCP star under torchrun/Slurm variables), or through a file on a shared filesystem.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "engine/dist/communicator.h"

namespace koff::cuda {

class NcclCommunicatorBase : public dist::Communicator {
 public:
  // Kernels producing the buffers of later collectives run on `stream` (default: the CUDA backend's
  // stream of the device).
  virtual void set_compute_stream(cudaStream_t stream) = 0;

 protected:
  using dist::Communicator::Communicator;
};

// The unique id broadcast from rank 0 over `bootstrap` (same ranks, same world); `device` is the GPU
// this process drives (tools/device.cpp picks it from the local rank).
std::unique_ptr<NcclCommunicatorBase> make_nccl(dist::Communicator& bootstrap, int device);

// The unique id through `path` on a filesystem every rank sees: rank 0 writes it (atomically), the
// others wait for it up to KOFF_DIST_TIMEOUT. The GPU is the local rank. The path must be unique to the job (e.g. contain
// $SLURM_JOB_ID): a file left by an earlier job would be read as this job's id.
std::unique_ptr<NcclCommunicatorBase> make_nccl_from_file(int rank, int world_size, int local_rank,
                                                          const std::string& path);

}  // namespace koff::cuda
