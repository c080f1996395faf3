#include "engine/dist/communicator.h"

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "engine/dist/comm_thread.h"
#include "engine/dist/host_communicators.h"
#include "engine/tensor/interrupt.h"
#include "engine/tensor/storage.h"

namespace koff::dist {

size_t reduce_type_size(ReduceType type) { return type == ReduceType::f32 ? 4 : 8; }

Communicator::Communicator(int rank, int world_size, int local_rank)
    : rank_(rank), world_size_(world_size), local_rank_(local_rank) {
  KOFF_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "rank {} of a world of {} processes", rank, world_size);
}

std::string Communicator::where() const { return fmt::format("rank {}/{} ({})", rank_, world_size_, backend()); }

namespace {

// A collective's handle that holds its buffer's memory until wait() has returned.
class KeepAliveWork : public Work {
 public:
  KeepAliveWork(WorkHandle work, std::shared_ptr<Storage> storage)
      : work_(std::move(work)), storage_(std::move(storage)) {}
  ~KeepAliveWork() override {
    if (storage_) {  // never waited for: the collective may still use the memory; never free it
      static auto* graveyard = new std::vector<std::shared_ptr<Storage>>;
      static std::mutex mutex;
      std::lock_guard<std::mutex> lock(mutex);
      graveyard->push_back(std::move(storage_));
    }
  }
  void wait() override {
    work_->wait();
    storage_.reset();
  }

 private:
  WorkHandle work_;
  std::shared_ptr<Storage> storage_;
};

}  // namespace

WorkHandle Communicator::all_reduce_sum_async(Tensor& t) {
  KOFF_CHECK(t.is_contiguous(), "{}: all-reduce of a non-contiguous tensor", where());
  // NCCL and the host-staged communicators reduce device memory; the host communicators host memory.
  KOFF_CHECK(t.device() == device(), "{}: all-reduce of a tensor on {}, but this communicator's buffers are on {}",
             where(), t.device().str(), device().str());
  KOFF_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64,
             "{}: all-reduce sums f32 or f64 tensors (gradients are reduced in f32), got {}", where(),
             dtype_name(t.dtype()));
  WorkHandle w =
      all_reduce_sum_async(t.raw_data(), t.numel(), t.dtype() == DType::f32 ? ReduceType::f32 : ReduceType::f64);
  return std::make_shared<KeepAliveWork>(std::move(w), t.storage());
}

// ---------------------------------------------------------------------------------------------
// Single process

namespace {

struct DoneWork : Work {
  void wait() override {}
};

class SingleCommunicator : public Communicator {
 public:
  SingleCommunicator() : Communicator(0, 1, 0) {}
  std::string backend() const override { return "single"; }
  WorkHandle all_reduce_sum_async(void*, int64_t, ReduceType) override { return std::make_shared<DoneWork>(); }
  void broadcast(void*, size_t, int root) override { KOFF_CHECK(root == 0, "broadcast from rank {} of 1", root); }
  void barrier() override {}
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  KOFF_CHECK(end && *end == '\0', "environment variable {}='{}' is not an integer", name, v);
  return static_cast<int>(x);
}

std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

std::unique_ptr<Communicator> make_single() { return std::make_unique<SingleCommunicator>(); }

double timeout_seconds() {
  const char* v = std::getenv("KOFF_DIST_TIMEOUT");
  if (!v || !*v) return 300.0;
  char* end = nullptr;
  const double t = std::strtod(v, &end);
  KOFF_CHECK(end && *end == '\0' && t > 0, "KOFF_DIST_TIMEOUT='{}' must be a positive number of seconds", v);
  return t;
}

LaunchInfo detect_launch() {
  LaunchInfo info;
  if (!env_str("OMPI_COMM_WORLD_SIZE").empty()) {  // OpenMPI's mpirun (also srun --mpi=pmix with OpenMPI)
    info.launcher = "mpirun";
    info.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    info.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    info.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
  } else if (!env_str("RANK").empty() && !env_str("WORLD_SIZE").empty()) {  // torchrun, or set by hand
    info.launcher = "torchrun";
    info.rank = env_int("RANK", 0);
    info.world_size = env_int("WORLD_SIZE", 1);
    info.local_rank = env_int("LOCAL_RANK", 0);
  } else if (!env_str("PMIX_RANK").empty() && env_int("SLURM_NTASKS", 1) > 1) {  // srun --mpi=pmix: MPI without mpirun
    info.launcher = "mpirun";
    info.rank = env_int("PMIX_RANK", 0);
    info.world_size = env_int("SLURM_NTASKS", 1);
    info.local_rank = env_int("SLURM_LOCALID", 0);
  } else if (!env_str("SLURM_PROCID").empty() && env_int("SLURM_NTASKS", 1) > 1) {  // srun, one task per GPU
    info.launcher = "slurm";
    info.rank = env_int("SLURM_PROCID", 0);
    info.world_size = env_int("SLURM_NTASKS", 1);
    info.local_rank = env_int("SLURM_LOCALID", 0);
    // Without a rendezvous address every task would train alone, all of them writing one run directory.
    KOFF_CHECK(!env_str("MASTER_ADDR").empty(),
               "started by srun as task {} of {} but MASTER_ADDR is not set: export MASTER_ADDR (the first node) "
               "and MASTER_PORT in the batch script, or use srun --mpi=pmix",
               info.rank, info.world_size);
  }
  if (info.launcher == "torchrun" || info.launcher == "slurm") {
    info.master_addr = env_str("MASTER_ADDR");
    info.master_port = env_int("MASTER_PORT", 29500);
    KOFF_CHECK(!info.master_addr.empty(), "{} launch (rank {} of {}): MASTER_ADDR is not set", info.launcher, info.rank,
               info.world_size);
  }
  KOFF_CHECK(info.world_size >= 1 && info.rank >= 0 && info.rank < info.world_size,
             "{} launch: rank {} is outside a world of {} processes", info.launcher, info.rank, info.world_size);
  return info;
}

std::unique_ptr<Communicator> from_environment() {
  const LaunchInfo info = detect_launch();
  std::string kind = env_str("KOFF_DIST");
  if (kind.empty()) kind = info.launcher == "mpirun" ? "mpi" : info.world_size > 1 ? "tcp" : "single";
  if (kind == "single") {
    KOFF_CHECK(info.world_size == 1, "KOFF_DIST=single in a {} launch of {} processes", info.launcher, info.world_size);
    return make_single();
  }
  if (kind == "mpi") return make_mpi();
  if (kind == "tcp") {
    KOFF_CHECK(
        !info.master_addr.empty(),
        "KOFF_DIST=tcp needs RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun convention) in the environment");
    return make_tcp(info.rank, info.world_size, info.local_rank, info.master_addr, info.master_port);
  }
  throw Error(fmt::format("KOFF_DIST='{}': expected single, mpi or tcp", kind));
}

// ---------------------------------------------------------------------------------------------
// CommThread

struct CommThread::Item : Work {
  std::shared_ptr<Shared> shared;
  std::string what;
  std::function<void()> fn;
  bool done = false;
  std::string error;
  bool timed = true;
  void wait() override;
};

struct CommThread::Shared {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Item>> queue;
  bool stop = false, broken = false, busy = false;
  std::string where;
  std::string first_error;  // what broke the thread, repeated by every later submit
  double timeout_s = 300;
};

void CommThread::Item::wait() {
  std::unique_lock lock(shared->mutex);
  if (timed) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(shared->timeout_s);
    // In slices, so that Ctrl-C is honoured while a peer is slow or gone (engine/tensor/interrupt.h):
    // the collective may never complete, so the thread is marked broken like after a timeout.
    while (!done && std::chrono::steady_clock::now() < deadline) {
      if (interrupt_pending()) {
        shared->broken = true;
        throw Interrupted(fmt::format("{}: interrupted while waiting for {}", shared->where, what));
      }
      const auto slice = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
      if (slice < deadline) shared->cv.wait_until(lock, slice, [&] { return done; });
      else shared->cv.wait_until(lock, deadline, [&] { return done; });
    }
    if (!done) {
      shared->broken = true;
      const std::string message = fmt::format(
          "{}: {} did not complete within {:g} s (KOFF_DIST_TIMEOUT): another rank died or hangs; stopping",
          shared->where, what, shared->timeout_s);
      if (shared->first_error.empty()) shared->first_error = message;
      throw Error(message);
    }
  } else {
    shared->cv.wait(lock, [&] { return done; });
  }
  if (!error.empty()) throw Error(error);
}

CommThread::CommThread(std::string where, double timeout_s) : shared_(std::make_shared<Shared>()) {
  shared_->where = std::move(where);
  shared_->timeout_s = timeout_s;
  thread_ = std::thread([shared = shared_] {
    for (;;) {
      std::shared_ptr<Item> item;
      {
        std::unique_lock lock(shared->mutex);
        shared->cv.wait(lock, [&] { return shared->stop || !shared->queue.empty(); });
        if (shared->stop) return;  // queued work is dropped: the communicator is going away
        item = shared->queue.front();
        shared->queue.pop_front();
        shared->busy = true;
      }
      std::string error;
      try {
        item->fn();
      } catch (const std::exception& e) {
        std::lock_guard lock(shared->mutex);
        error = fmt::format("{}: {}: {}", shared->where, item->what, e.what());
      }
      {
        std::lock_guard lock(shared->mutex);
        item->done = true;
        shared->busy = false;
        item->error = std::move(error);
        // After a failed collective the ranks no longer agree on which collective comes next.
        if (!item->error.empty()) {
          shared->broken = true;
          if (shared->first_error.empty()) shared->first_error = item->error;
        }
        item->fn = nullptr;
      }
      shared->cv.notify_all();
    }
  });
}

CommThread::~CommThread() {
  bool stuck;
  {
    std::unique_lock lock(shared_->mutex);
    shared_->stop = true;
    shared_->cv.notify_all();
    // After a failure the thread may still be finishing a call that is failing too; give it a moment.
    if (shared_->broken) shared_->cv.wait_for(lock, std::chrono::seconds(1), [&] { return !shared_->busy; });
    stuck = shared_->busy;
  }
  // A thread stuck in a collective that will never complete cannot be joined; leave it (it holds
  // its own reference to the queue), the process is about to exit with the error.
  if (stuck)
    thread_.detach();
  else
    thread_.join();
}

WorkHandle CommThread::submit(std::string what, std::function<void()> fn) {
  auto item = std::make_shared<Item>();
  item->shared = shared_;
  item->what = std::move(what);
  item->fn = std::move(fn);
  {
    std::lock_guard lock(shared_->mutex);
    KOFF_CHECK(!shared_->broken, "{}: {} after an earlier collective failed{}{}", shared_->where, item->what,
               shared_->first_error.empty() ? "" : ": ", shared_->first_error);
    shared_->queue.push_back(item);
  }
  shared_->cv.notify_all();
  return item;
}

void CommThread::run(std::string what, std::function<void()> fn, bool timed) {
  auto work = submit(std::move(what), std::move(fn));
  static_cast<Item*>(work.get())->timed = timed;
  work->wait();
}

bool CommThread::broken() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->broken;
}

void CommThread::set_where(std::string where) {
  std::lock_guard lock(shared_->mutex);
  shared_->where = std::move(where);
}

}  // namespace koff::dist
