// Data-parallel gradient reduction: the gradients of the trainables summed over all ranks, in f32,
// in buckets, while the backward is still running.
//
// Each rank computes the gradient of (its share of the global batch's loss) / (the global token
// count); the sum over ranks is then exactly the single-process gradient of the whole global batch,
// up to the order of float additions.
//
// Buckets: trainables are packed into flat f32 buffers of about `bucket_bytes`. A leaf's gradient is
// final as soon as the backward has run every node that feeds it (autograd's grad_ready_hook); it is
// copied into its bucket then, and a bucket whose gradients are all in starts its all-reduce on the
// communicator's thread while the backward goes on into earlier layers. Buckets start in bucket order
// on every rank (collectives must match), and the order is the order in which gradients became ready
// in the first step on rank 0 (the graph is the same on every rank and every step), broadcast once:
// the first step reduces everything after its backward, later steps overlap. Like PyTorch DDP's
// bucket rebuild after the first iteration.
//
// Two communicators: `comm` reduces the buckets, which live on its device() (the host for CPU ranks;
// the GPU for NCCL and the host-staged communicator); `host` (default: comm itself, which must then
// be a host communicator) carries the host-side order broadcast. The same code runs every case.
#pragma once

#include <vector>

#include "autograd/variable.h"
#include "engine/dist/communicator.h"

namespace koff::dist {

class GradReducer {
 public:
  GradReducer(Communicator& comm, std::vector<autograd::Variable> params, size_t bucket_bytes,
              Communicator* host = nullptr);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Installs the hooks for the next backward(): the gradients it finishes are the ones reduced. Arm
  // before the LAST micro-batch's backward only: earlier micro-batches just accumulate locally.
  void arm();
  // After that backward: reduces what has not started (a trainable no gradient reached counts as
  // zeros), waits for every bucket, writes the sums into the gradients, removes the hooks.
  void finish();

  size_t num_buckets() const { return buckets_.size(); }
  // Buckets whose all-reduce started before finish() in the last step (0 in the first step).
  size_t launched_during_backward() const { return launched_early_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // of each param in `buffer`
    Tensor buffer;                 // f32, flat
    size_t remaining = 0;          // gradients not yet copied in this step
    WorkHandle work;
  };
  void on_ready(size_t i);
  void copy_in(size_t i);
  void launch_ready();
  void plan(const std::vector<int32_t>& order);
  void clear_hooks();

  Communicator& comm_;
  Communicator& host_;
  std::vector<autograd::Variable> params_;
  size_t bucket_bytes_;
  std::vector<Bucket> buckets_;  // empty until the first step has been seen
  std::vector<size_t> bucket_of_, slot_of_;
  std::vector<int32_t> ready_order_;  // first step: the order in which the hooks fired
  std::vector<bool> ready_;
  size_t next_launch_ = 0, launched_early_ = 0;
  bool armed_ = false;
};

}  // namespace koff::dist
