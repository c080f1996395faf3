// How many OpenMP threads a CPU training step runs on, chosen by measuring the steps themselves.
//
// Why: with more threads than free cores a step can fall far below a one-thread step. Measured on the
// project's 2-core machine, the embedded KOFF step (B 8, T 256) beside one busy process per core:
// 1 thread 0.57-0.63 s a step (0.70-0.80 cores of CPU time); 2 threads either 0.46-0.48 s (1.0 core)
// or, in about one run in three, 1.7-2.0 s (0.27-0.32 cores): both threads sit on cores a busy
// process holds, and every barrier waits for a sleeping thread to be scheduled again. The process's
// own CPU time shows it: its threads got 0.3 cores of the 2 they asked for.
//
// What the governor does. It judges WINDOWS of steps: one step, or as many as add up to 0.2 s of
// wall time (/proc/stat counts in 10 ms ticks). The first step of a run pays one-time costs and is
// left out, unless its threads got less than a quarter of a core each (0.3 cores for 2 threads in the
// slow runs above): then the second step is already a trial. For each window:
//   own  = this process's CPU seconds / wall seconds (the cores it got);
//   free = the machine's idle CPU seconds / wall seconds (cores nobody used; /proc/stat);
//   could = floor(own + free + 1/4), within [1, max]: the cores the steps could have had.
// When could < threads and own < 3/4 of threads (the threads did not get their cores), the next
// window is a TRIAL at `could` threads; when could > threads (idle cores appeared), a trial above. A
// trial is kept when its steps are on average no more than 2% slower than the window's before it
// (downwards: fewer threads, less exposure to the other processes) or at least 2% faster (upwards);
// otherwise the count goes back and the next trial waits 4, 8, ... 64 windows (or until the steps get
// 30% slower than when the wait began: the load or the threads' placement changed). The count never
// exceeds the starting one (OMP_NUM_THREADS, or all cores). Steps are alike in shape during training
// (same batch and length), so one window against the one before is a fair comparison.
//
// Changing the count must not change the results: the CPU kernels' reductions use fixed chunks
// (common.h), GEMMs cut K into blocks both OpenBLAS drivers keep whole (gemm.cpp), and the governor
// acts only where a check of the BLAS confirms it (may_adapt_threads): then a run resumed at another
// count matches the uninterrupted one bit for bit (tests: Trainer.SameBitsOnAnyNumberOfThreads).
//
// OpenBLAS's OpenMP build reads omp_get_max_threads() at every call, so omp_set_num_threads() on the
// thread that runs the step sets the kernels' and the GEMMs' threads together.
#pragma once

#include <cstdint>
#include <string>

namespace koff::cpu {

// One step's measurements, in seconds. idle < 0: the machine's idle time is unknown (no /proc/stat).
struct StepTimes {
  double wall = 0, cpu = 0, idle = -1;
};

class ThreadGovernor {
 public:
  // max_threads: the most the step may use (the count at start). adaptive = false: it never changes.
  ThreadGovernor(int max_threads, bool adaptive);

  int threads() const { return current_; }
  int max_threads() const { return max_; }
  bool adaptive() const { return adaptive_; }

  // After a step that ran at threads(): returns a line for the log when a trial is kept (the count
  // changed for good), else "" (a trial starting or losing is not logged). The caller applies threads()
  // before the next step.
  std::string observe(const StepTimes& t);

  // Totals for the end of a run: steps observed at fewer threads than max, trials, trials kept.
  int64_t steps_below_max() const { return below_max_; }
  int64_t trials() const { return trials_; }
  int64_t kept() const { return kept_; }

  // The governor of a training loop: the current thread count as the most, adaptive when
  // may_adapt_threads(asked, why_not) allows it (declared below).
  static ThreadGovernor for_training(bool asked, std::string* why_not);

 private:
  int could_have(double own, double free) const;  // floor(own + free + 1/4) within [1, max]
  void start_trial(int threads, double step_seconds, double own, double free);

  int max_, current_;
  bool adaptive_;
  bool seen_first_ = false;
  bool in_trial_ = false;
  int before_trial_ = 0;      // the count the trial is measured against
  double before_step_ = 0;    // that count's seconds a step, in the window before the trial
  double trigger_own_ = 0, trigger_free_ = 0;  // what started the trial (for the log)
  StepTimes window_{0, 0, 0};  // steps since the last judgement
  int64_t window_steps_ = 0;
  int64_t wait_ = 0;          // windows before the next trial may start
  double waited_from_ = 0;    // seconds a step when the wait began
  int64_t backoff_ = 4;       // the wait after a trial that lost
  int64_t below_max_ = 0, trials_ = 0, kept_ = 0;
};

// Measures one step: start() before it, stop() after (process CPU time, wall time, /proc/stat idle).
class StepClock {
 public:
  void start();
  StepTimes stop() const;

 private:
  double wall0_ = 0, cpu0_ = 0, idle0_ = -1;
};

// The machine's idle CPU seconds since boot, summed over CPUs (idle + iowait of /proc/stat); -1 when
// unreadable.
double machine_idle_seconds();

// Whether a CPU training loop may let the governor act: `asked` (not --fixed-threads), more than one
// thread, and a BLAS whose GEMM gives the same bits on any thread count (gemm.h), without which a
// resumed run would not match an uninterrupted one. *why_not: a line for the log when that check is
// what says no, else "".
bool may_adapt_threads(bool asked, std::string* why_not);

// omp_set_num_threads on the calling thread (the one that runs the step), and what it is now.
void set_step_threads(int n);
int step_threads();

// One training step under the governor: timed, judged, and the count it chose applied for the next
// step; note(line) gets the governor's line when it changes the count. A fixed governor only runs it.
template <typename Step, typename Note>
auto run_governed_step(ThreadGovernor& governor, Step&& step, Note&& note) {
  if (!governor.adaptive()) return step();
  StepClock clock;
  clock.start();
  auto result = step();
  if (const std::string change = governor.observe(clock.stop()); !change.empty()) note(change);
  set_step_threads(governor.threads());
  return result;
}

}  // namespace koff::cpu
