// MPI_COMM_WORLD as a Communicator (OpenMPI under `mpirun -np N`). Host buffers only: on GPUs the
// gradients go through NCCL, and MPI only hands NCCL its unique id (engine/dist/nccl_communicator.h).
//
// Every MPI call runs on the CommThread (the thread that called MPI_Init_thread, so
// MPI_THREAD_FUNNELED is enough) and is checked: MPI_COMM_WORLD returns errors (MPI_ERRORS_RETURN)
// instead of aborting, and the message names the call and MPI's own description.
#include "engine/dist/host_communicators.h"

#ifndef KOFF_HAVE_MPI
namespace koff::dist {
std::unique_ptr<Communicator> make_mpi() {
  throw Error("this koff was built without MPI (apt install libopenmpi-dev openmpi-bin, then rebuild); "
              "use the torchrun-style environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) instead");
}
}  // namespace koff::dist
#else
#include <mpi.h>

#include <algorithm>
#include <climits>

#include "engine/dist/comm_thread.h"
#include "engine/dist/host_communicators.h"

namespace koff::dist {

namespace {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw Error(fmt::format("MPI call {} failed: {}", call,
                          len > 0 ? std::string(text, static_cast<size_t>(len)) : "unknown error"));
}
#define KOFF_MPI_CHECK(call) ::koff::dist::check_mpi((call), #call)

// MPI counts are int: larger buffers go in chunks.
constexpr int64_t kMaxChunk = INT_MAX / 8;

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator() : Communicator(0, 1, 0), thread_("mpi (starting)", timeout_seconds()) {
    int rank = 0, size = 1, local = 0;
    thread_.run("MPI_Init_thread", [&] {
      int initialized = 0, finalized = 0;
      KOFF_MPI_CHECK(MPI_Initialized(&initialized));
      KOFF_MPI_CHECK(MPI_Finalized(&finalized));
      KOFF_CHECK(!initialized && !finalized, "MPI was already {} in this process: one MPI communicator per process",
                 finalized ? "finalised" : "initialised");
      int provided = 0;
      KOFF_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      KOFF_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI provides thread level {}, koff needs MPI_THREAD_FUNNELED",
                 provided);
      KOFF_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
      KOFF_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
      KOFF_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
      // The local rank (which GPU) is this rank's index among the ranks that share its node.
      MPI_Comm node;
      KOFF_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
      KOFF_MPI_CHECK(MPI_Comm_rank(node, &local));
      KOFF_MPI_CHECK(MPI_Comm_free(&node));
    });
    rank_ = rank, world_size_ = size, local_rank_ = local;
    thread_.set_where(where());
  }

  ~MpiCommunicator() override {
    if (abandoned_ || thread_.broken()) return;  // a rank is gone: MPI_Finalize would wait for it forever
    try {
      // Unbounded: finalisation waits for the slowest rank (rank 0 evaluates and exports after training).
      thread_.run(
          "MPI_Finalize", [] { KOFF_MPI_CHECK(MPI_Finalize()); }, false);
    } catch (const std::exception&) {
      // Nothing left to do about it at exit.
    }
  }

  std::string backend() const override { return "mpi"; }
  void abandon() override { abandoned_ = true; }

  WorkHandle all_reduce_sum_async(void* data, int64_t count, ReduceType type) override {
    return thread_.submit(
        fmt::format("all-reduce of {} {} values", count, type == ReduceType::f32 ? "f32" : "f64"), [data, count, type] {
          const MPI_Datatype dt = type == ReduceType::f32 ? MPI_FLOAT : MPI_DOUBLE;
          char* p = static_cast<char*>(data);
          for (int64_t done = 0; done < count;) {
            const int n = static_cast<int>(std::min(count - done, kMaxChunk));
            KOFF_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, p + done * static_cast<int64_t>(reduce_type_size(type)), n, dt,
                                         MPI_SUM, MPI_COMM_WORLD));
            done += n;
          }
        });
  }

  void broadcast(void* data, size_t bytes, int root) override {
    KOFF_CHECK(root >= 0 && root < world_size_, "{}: broadcast from rank {}", where(), root);
    thread_.run(fmt::format("broadcast of {} bytes from rank {}", bytes, root), [data, bytes, root] {
      char* p = static_cast<char*>(data);
      for (size_t done = 0; done < bytes;) {
        const int n = static_cast<int>(std::min<size_t>(bytes - done, static_cast<size_t>(kMaxChunk)));
        KOFF_MPI_CHECK(MPI_Bcast(p + done, n, MPI_BYTE, root, MPI_COMM_WORLD));
        done += static_cast<size_t>(n);
      }
    });
  }

  void barrier() override {
    thread_.run("barrier", [] { KOFF_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); });
  }

 private:
  CommThread thread_;
  bool abandoned_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi() { return std::make_unique<MpiCommunicator>(); }

}  // namespace koff::dist
#endif  // KOFF_HAVE_MPI
