// The thread on which a host communicator (MPI, TCP) runs its collectives, one at a time, in
// submission order.
//
// Why a thread: MPI and sockets progress only while some thread is inside them, so an all-reduce
// started during the backward would otherwise not move until the backward ends. The thread is
// also the only one that calls MPI (MPI_THREAD_FUNNELED, the thread that called MPI_Init_thread).
//
// Why the timeouts: a collective blocks until every rank has joined it. When a rank dies or hangs the
// others would wait forever; wait() gives up after `timeout_s` with an error that says which
// collective, and marks the thread broken: it is stuck inside a call that may never return, so the
// destructor leaves it behind (detached) instead of joining it, and the process can exit.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "engine/dist/communicator.h"

namespace koff::dist {

class CommThread {
 public:
  // `where` prefixes errors ("rank 1/2 (mpi)"); `timeout_s` bounds each wait().
  CommThread(std::string where, double timeout_s);
  ~CommThread();
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;

  // Queues fn (named `what` in errors); the handle's wait() rethrows what fn threw.
  WorkHandle submit(std::string what, std::function<void()> fn);
  // submit + wait; with timed = false the wait is unbounded (MPI_Finalize, which waits for the
  // slowest rank to finish its own work).
  void run(std::string what, std::function<void()> fn, bool timed = true);

  bool broken() const;
  void set_where(std::string where);

 private:
  struct Item;
  struct Shared;
  void loop();
  std::shared_ptr<Shared> shared_;
  std::thread thread_;
};

}  // namespace koff::dist
