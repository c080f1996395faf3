#include "engine/dist/nccl_communicator.h"

#include <nccl.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cuda/check.h"
#include "cuda/device.h"

// Every NCCL call checked, with the call, NCCL's name for the error and its last error message.
#define KOFF_NCCL_CHECK(call)                                                                              \
  do {                                                                                                     \
    ncclResult_t koff_nr_ = (call);                                                                        \
    if (koff_nr_ != ncclSuccess && koff_nr_ != ncclInProgress)                                             \
      ::koff::cuda::fail_call("NCCL", #call, __FILE__, __LINE__, ::koff::cuda::nccl_result_name(koff_nr_), \
                              ncclGetErrorString(koff_nr_));                                               \
  } while (0)

namespace koff::cuda {

const char* nccl_result_name(ncclResult_t r) {
  switch (r) {
    case ncclSuccess:
      return "ncclSuccess";
    case ncclUnhandledCudaError:
      return "ncclUnhandledCudaError";
    case ncclSystemError:
      return "ncclSystemError";
    case ncclInternalError:
      return "ncclInternalError";
    case ncclInvalidArgument:
      return "ncclInvalidArgument";
    case ncclInvalidUsage:
      return "ncclInvalidUsage";
    case ncclRemoteError:
      return "ncclRemoteError";
    case ncclInProgress:
      return "ncclInProgress";
    default:
      return "ncclResult (unknown)";
  }
}

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

class Event {
 public:
  Event() { KOFF_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// State shared by the communicator and its handles (a handle may outlive a failed communicator).
struct NcclState {
  ncclComm_t comm = nullptr;
  bool aborted = false;
  std::string where;
  double timeout_s = 300;

  // Polls until `done` returns true; NCCL's asynchronous errors (a peer gone, a network error) and
  // the timeout abort the communicator and throw.
  template <typename Done>
  void poll(const std::string& what, Done done) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      KOFF_CHECK(!aborted, "{}: {} on an aborted NCCL communicator", where, what);
      if (done()) return;
      ncclResult_t async = ncclSuccess;
      KOFF_NCCL_CHECK(ncclCommGetAsyncError(comm, &async));
      if (async != ncclSuccess && async != ncclInProgress) {
        const std::string last = ncclGetLastError(comm);
        abort();
        throw Error(fmt::format("{}: {} failed: {} ({}); {}", where, what, nccl_result_name(async),
                                ncclGetErrorString(async), last));
      }
      if (Clock::now() > deadline) {
        abort();
        throw Error(
            fmt::format("{}: {} did not complete within {:g} s (KOFF_DIST_TIMEOUT): another rank died or "
                        "hangs; stopping",
                        where, what, timeout_s));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  void abort() {
    if (!aborted && comm) ncclCommAbort(comm);  // unblocks NCCL's kernels and proxy threads
    aborted = true;
  }
};

class NcclWork : public dist::Work {
 public:
  NcclWork(std::shared_ptr<NcclState> state, std::string what, cudaStream_t nccl_stream, cudaStream_t compute)
      : state_(std::move(state)), what_(std::move(what)), compute_(compute) {
    KOFF_CUDA_CHECK(cudaEventRecord(done_.get(), nccl_stream));
  }
  void wait() override {
    if (finished_) return;
    state_->poll(what_, [&] {
      const cudaError_t q = cudaEventQuery(done_.get());
      if (q == cudaErrorNotReady) return false;
      KOFF_CUDA_CHECK(q);
      return true;
    });
    // Kernels issued later on the compute stream read the reduced buffer only after the reduction.
    KOFF_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_.get(), 0));
    finished_ = true;
  }

 private:
  std::shared_ptr<NcclState> state_;
  std::string what_;
  cudaStream_t compute_;
  Event done_;
  bool finished_ = false;
};

class NcclCommunicator : public NcclCommunicatorBase {
 public:
  NcclCommunicator(int rank, int world_size, int local_rank, int device, const ncclUniqueId& id)
      : NcclCommunicatorBase(rank, world_size, local_rank), device_(device), state_(std::make_shared<NcclState>()) {
    state_->where = where();
    state_->timeout_s = dist::timeout_seconds();
    int devices = 0;
    KOFF_CUDA_CHECK(cudaGetDeviceCount(&devices));
    KOFF_CHECK(device >= 0 && device < devices, "{}: GPU {} but this process sees {} GPUs (one process per GPU)",
               where(), device, devices);
    KOFF_CUDA_CHECK(cudaSetDevice(device));
    // On the backend's terms: collectives wait for what its stream has issued, and its later kernels
    // wait for the collectives (NcclWork::wait), so one caching allocator and one cuBLASLt workspace
    // per device stay safe (the NCCL stream runs no kernel of ours and allocates nothing).
    compute_ = static_cast<cudaStream_t>(cuda::compute_stream(device));
    produced_ = std::make_unique<Event>();  // an event belongs to the device current at its creation
    KOFF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    KOFF_CUDA_CHECK(cudaMalloc(&scratch_, sizeof(double)));
    // Non-blocking: initialisation and collectives return at once and we poll, so a peer that never
    // arrives ends in a timeout and ncclCommAbort instead of a hang.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    KOFF_NCCL_CHECK(ncclCommInitRankConfig(&state_->comm, world_size, id, rank, &config));
    state_->poll("ncclCommInitRankConfig", [&] { return async_done(); });
  }

  ~NcclCommunicator() override {
    if (!state_->aborted && state_->comm) {
      try {
        KOFF_NCCL_CHECK(ncclCommFinalize(state_->comm));
        state_->poll("ncclCommFinalize", [&] { return async_done(); });
        ncclCommDestroy(state_->comm);
      } catch (const std::exception&) {
        state_->abort();
      }
    }
    if (scratch_) cudaFree(scratch_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda(device_); }
  void set_compute_stream(cudaStream_t stream) override { compute_ = stream; }
  void abandon() override { state_->abort(); }

  dist::WorkHandle all_reduce_sum_async(void* data, int64_t count, dist::ReduceType type) override {
    const std::string what =
        fmt::format("all-reduce of {} {} values", count, type == dist::ReduceType::f32 ? "f32" : "f64");
    after_compute();
    KOFF_NCCL_CHECK(ncclAllReduce(data, data, static_cast<size_t>(count),
                                  type == dist::ReduceType::f32 ? ncclFloat32 : ncclFloat64, ncclSum, state_->comm,
                                  stream_));
    enqueued(what);
    return std::make_shared<NcclWork>(state_, what, stream_, compute_);
  }

  void broadcast(void* data, size_t bytes, int root) override {
    KOFF_CHECK(root >= 0 && root < world_size_, "{}: broadcast from rank {}", where(), root);
    after_compute();
    const std::string what = fmt::format("broadcast of {} bytes from rank {}", bytes, root);
    KOFF_NCCL_CHECK(ncclBroadcast(data, data, bytes, ncclUint8, root, state_->comm, stream_));
    enqueued(what);
    NcclWork(state_, fmt::format("broadcast of {} bytes from rank {}", bytes, root), stream_, compute_).wait();
  }

  void barrier() override {
    KOFF_CUDA_CHECK(cudaMemsetAsync(scratch_, 0, sizeof(double), compute_));
    all_reduce_sum(scratch_, 1, dist::ReduceType::f64);
  }

 private:
  bool async_done() {
    ncclResult_t r = ncclSuccess;
    KOFF_NCCL_CHECK(ncclCommGetAsyncError(state_->comm, &r));
    if (r == ncclInProgress) return false;
    KOFF_NCCL_CHECK(r);
    return true;
  }
  // A non-blocking communicator may return ncclInProgress before the collective's kernel is on the
  // stream; an event recorded then would complete at once and release unreduced buffers. So wait
  // (polled, under the timeout) until NCCL says the call is done enqueuing, then record.
  void enqueued(const std::string& what) {
    state_->poll(what + " (enqueue)", [&] { return async_done(); });
  }
  // The collective's stream waits for what the compute stream has issued so far.
  void after_compute() {
    KOFF_CHECK(!state_->aborted, "{}: collective on an aborted NCCL communicator", where());
    KOFF_CUDA_CHECK(cudaEventRecord(produced_->get(), compute_));
    KOFF_CUDA_CHECK(cudaStreamWaitEvent(stream_, produced_->get(), 0));
  }

  int device_ = 0;
  std::shared_ptr<NcclState> state_;
  cudaStream_t stream_ = nullptr, compute_ = nullptr;
  void* scratch_ = nullptr;
  std::unique_ptr<Event> produced_;
};

}  // namespace

std::unique_ptr<NcclCommunicatorBase> make_nccl(dist::Communicator& bootstrap, int device) {
  ncclUniqueId id{};
  if (bootstrap.is_root()) KOFF_NCCL_CHECK(ncclGetUniqueId(&id));
  bootstrap.broadcast(&id, sizeof id, 0);
  return std::make_unique<NcclCommunicator>(bootstrap.rank(), bootstrap.world_size(), bootstrap.local_rank(), device,
                                            id);
}

std::unique_ptr<NcclCommunicatorBase> make_nccl_from_file(int rank, int world_size, int local_rank,
                                                          const std::string& path) {
  ncclUniqueId id{};
  if (rank == 0) {
    KOFF_NCCL_CHECK(ncclGetUniqueId(&id));
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f.write(reinterpret_cast<const char*>(&id), sizeof id);
      KOFF_CHECK(f.good(), "cannot write NCCL's unique id to {}", tmp);
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);  // atomic: the others never read half an id
    KOFF_CHECK(!ec, "cannot rename {} to {}: {}", tmp, path, ec.message());
  } else {
    const double timeout = dist::timeout_seconds();
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout);
    for (;;) {
      std::error_code ec;
      if (fs::file_size(path, ec) == sizeof id && !ec) break;
      KOFF_CHECK(Clock::now() < deadline,
                 "rank {}: NCCL's unique id did not appear in {} within {:g} s "
                 "(KOFF_DIST_TIMEOUT): is rank 0 running, and is the path on a filesystem both see?",
                 rank, path, timeout);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::ifstream f(path, std::ios::binary);
    f.read(reinterpret_cast<char*>(&id), sizeof id);
    KOFF_CHECK(f.good(), "cannot read NCCL's unique id from {}", path);
  }
  return std::make_unique<NcclCommunicator>(rank, world_size, local_rank, local_rank, id);
}

}  // namespace koff::cuda
