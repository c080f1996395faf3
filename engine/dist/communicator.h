// Collectives between the processes of a data-parallel job (one process per GPU, or per CPU socket).
//
// Three kinds, picked at run time from how the process was launched (from_environment()):
//   single  one process; every collective is the identity.
//   mpi     launched by `mpirun -np N` (OpenMPI): MPI_Allreduce on host buffers (mpi_communicator.cpp).
//   tcp     launched torchrun/Slurm style (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT):
//           a small TCP star through rank 0 (tcp_communicator.cpp); it is also the store that hands
//           NCCL its unique id.
// Device buffers (GPU ranks) need a communicator of their own, built on one of these: NCCL
// (engine/dist/nccl_communicator.h, its own stream, bootstrapped by any of these) or, where NCCL is
// absent (and on the device emulator), the host-staged one (engine/dist/staged_communicator.h).
// The trainer uses that one for the gradient buckets and the host one for host scalars.
//
// Every collective is issued in the same order on every rank (the caller's job: the trainer issues
// them from the same code path everywhere). The host communicators run their collectives on one
// dedicated thread, in submission order: the caller gets a handle at once and keeps computing (the
// next layers' backward) while the network works; that thread is also the only one that calls MPI.
//
// A rank that dies or hangs must not hang the others: a handle's wait() gives up after timeout_seconds()
// (KOFF_DIST_TIMEOUT, default 300 s) with an error naming the collective and this rank; mpirun also
// stops the job as soon as one rank exits abnormally, and the TCP star sees a closed connection at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/tensor/tensor.h"

namespace koff::dist {

enum class ReduceType { f32, f64 };
size_t reduce_type_size(ReduceType type);

// A collective in flight. wait() returns once it is complete and its buffer holds the result, and
// throws koff::Error when it failed or did not complete within the timeout. Waiting twice is fine.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};
using WorkHandle = std::shared_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual std::string backend() const = 0;  // "single", "mpi", "tcp", "nccl", "mpi+staged", ...
  // Where the buffers of its collectives live: the host (cpu) for single, mpi and tcp; the GPU
  // this process drives for nccl and the host-staged communicators.
  virtual Device device() const { return Device::cpu(); }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }  // the GPU this process drives
  bool is_root() const { return rank_ == 0; }
  std::string where() const;  // "rank 1/4 (mpi)", the prefix of every error

  // In-place sum over all ranks of `count` elements at `data`. The buffer must stay alive and
  // untouched until the handle's wait() has returned.
  virtual WorkHandle all_reduce_sum_async(void* data, int64_t count, ReduceType type) = 0;
  // Root's `bytes` at `data` copied to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // This rank failed: skip the orderly shutdown (MPI_Finalize waits for every rank, and the others
  // may be waiting in a collective for this one). The process should exit with its error next.
  virtual void abandon() {}

  void all_reduce_sum(void* data, int64_t count, ReduceType type) { all_reduce_sum_async(data, count, type)->wait(); }
  // A contiguous f32 (or f64) tensor on this communicator's device(). The handle keeps the tensor's
  // memory alive until wait() has returned (the collective may still read or write it on another
  // thread or stream); a handle dropped without wait() leaks that memory on purpose rather than hand
  // it back to an allocator while a collective may still use it (an error path: the job is ending).
  WorkHandle all_reduce_sum_async(Tensor& t);
  void all_reduce_sum(Tensor& t) { all_reduce_sum_async(t)->wait(); }

 protected:
  Communicator(int rank, int world_size, int local_rank);
  int rank_ = 0, world_size_ = 1, local_rank_ = 0;
};

// The one-process communicator.
std::unique_ptr<Communicator> make_single();

// How this process was launched, read from the environment.
struct LaunchInfo {
  std::string launcher;  // "mpirun", "torchrun" (RANK/WORLD_SIZE/...), "slurm" (SLURM_PROCID/...), "" alone
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr;  // torchrun/slurm only
  int master_port = 0;
};
LaunchInfo detect_launch();

// The host communicator of this process: MPI under mpirun, TCP under torchrun/Slurm style variables,
// single otherwise. KOFF_DIST=single|mpi|tcp overrides the choice.
std::unique_ptr<Communicator> from_environment();

// Seconds a collective may wait for the other ranks before the job is declared broken
// (KOFF_DIST_TIMEOUT, default 300).
double timeout_seconds();

}  // namespace koff::dist
