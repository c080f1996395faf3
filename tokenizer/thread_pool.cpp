#include "tokenizer/thread_pool.h"

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace koff {

namespace {

class ThreadPool {
 public:
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // Returns false (and runs nothing) when the pool is busy with another call.
  bool run(int workers, const std::function<void(int)>& fn) {
    std::unique_lock busy(run_mutex_, std::try_to_lock);
    if (!busy.owns_lock() || in_pool_task_) return false;
    std::unique_lock lock(mutex_);
    while (static_cast<int>(threads_.size()) < workers - 1) {
      int index = static_cast<int>(threads_.size());
      threads_.emplace_back([this, index] { worker(index); });
    }
    job_ = &fn;
    job_workers_ = workers;
    pending_ = workers - 1;
    ++generation_;
    lock.unlock();
    wake_.notify_all();
    std::exception_ptr error;
    try {
      fn(0);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    if (!error) error = job_error_;
    job_error_ = nullptr;
    lock.unlock();
    if (error) std::rethrow_exception(error);
    return true;
  }

 private:
  void worker(int index) {
    in_pool_task_ = true;
    uint64_t seen = 0;
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (index + 1 >= job_workers_) continue;  // not needed for this job
      const auto* fn = job_;
      lock.unlock();
      std::exception_ptr error;
      try {
        (*fn)(index + 1);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (error && !job_error_) job_error_ = error;
      if (--pending_ == 0) done_.notify_all();
    }
  }

  static thread_local bool in_pool_task_;
  std::mutex run_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  int job_workers_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  std::exception_ptr job_error_;
  bool stop_ = false;
};

thread_local bool ThreadPool::in_pool_task_ = false;

ThreadPool& pool() {
  static ThreadPool p;
  return p;
}

}  // namespace

void parallel_for_workers(int workers, const std::function<void(int)>& fn) {
  if (workers <= 1) {
    fn(0);
    return;
  }
  if (pool().run(workers, fn)) return;
  // Pool busy (a concurrent call) or called from a pool task: fall back to our own threads.
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(workers);
  for (int w = 1; w < workers; ++w)
    threads.emplace_back([&, w] {
      try {
        fn(w);
      } catch (...) {
        errors[w] = std::current_exception();
      }
    });
  try {
    fn(0);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace koff
