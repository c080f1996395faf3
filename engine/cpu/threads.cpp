#include "engine/cpu/threads.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>

#include <fmt/core.h>

#include "engine/cpu/gemm.h"

namespace koff::cpu {

namespace {

constexpr double kDownSlack = 1.02;  // a trial below is kept unless > 2% slower
constexpr double kUpGain = 0.98;     // a trial above is kept when >= 2% faster
constexpr int64_t kFirstBackoff = 4, kMaxBackoff = 64;
constexpr double kChanged = 1.3;       // a wait ends when the steps are 30% slower than before it
constexpr double kWindowSeconds = 0.2;  // a judgement covers at least this much wall time
constexpr double kSevere = 0.25;        // the first step is judged when its threads got < 1/4 core each

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

const auto kEpoch = std::chrono::steady_clock::now();

double process_cpu_seconds() {
  timespec ts{};
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

ThreadGovernor::ThreadGovernor(int max_threads, bool adaptive)
    : max_(std::max(1, max_threads)), current_(std::max(1, max_threads)), adaptive_(adaptive && max_threads > 1) {}

std::string ThreadGovernor::observe(const StepTimes& t) {
  if (!adaptive_ || t.wall <= 0) return "";
  if (current_ < max_) ++below_max_;
  if (!seen_first_) {  // the first step pays one-time costs (allocation, page faults, caches)
    seen_first_ = true;
    // ... so it is judged only when its threads were mostly asleep: a trial whose step will be
    // compared with a step inflated by those costs, which only a severe case can afford.
    const double own = t.cpu / t.wall, free = t.idle >= 0 ? std::max(0.0, t.idle / t.wall) : 0.0;
    if (t.wall >= kWindowSeconds && own < kSevere * current_)
      start_trial(std::min(could_have(own, free), current_ - 1), t.wall, own, free);
    return "";
  }
  // Short steps are judged together: /proc/stat counts in 10 ms ticks.
  window_.wall += t.wall, window_.cpu += t.cpu;
  window_.idle = t.idle >= 0 && window_.idle >= 0 ? window_.idle + t.idle : -1;
  ++window_steps_;
  if (window_.wall < kWindowSeconds) return "";
  const StepTimes w = window_;
  const double per_step = w.wall / static_cast<double>(window_steps_);
  window_ = StepTimes{0, 0, 0}, window_steps_ = 0;

  const double own = w.cpu / w.wall;
  const double free = w.idle >= 0 ? std::max(0.0, w.idle / w.wall) : 0.0;
  if (in_trial_) {
    in_trial_ = false;
    const bool down = current_ < before_trial_;
    const bool keep = down ? per_step <= before_step_ * kDownSlack : per_step <= before_step_ * kUpGain;
    if (keep) {
      ++kept_;
      backoff_ = kFirstBackoff;
      return fmt::format("cpu threads {} -> {}: a step took {:.0f} ms on {} threads ({:.2f} cores busy for this "
                         "process, {:.2f} idle) and {:.0f} ms on {}",
                         before_trial_, current_, 1e3 * before_step_, before_trial_, trigger_own_, trigger_free_,
                         1e3 * per_step, current_);
    }
    current_ = before_trial_;
    wait_ = backoff_;
    backoff_ = std::min(backoff_ * 2, kMaxBackoff);
    waited_from_ = before_step_;
    return "";
  }
  // Waiting after a lost trial, unless the steps have since slowed down a lot (the other processes or
  // the threads' placement changed): then judge now.
  if (wait_ > 0 && per_step <= waited_from_ * kChanged) {
    --wait_;
    return "";
  }
  wait_ = 0;
  const int could = could_have(own, free);
  const bool starved = could < current_ && own < 0.75 * current_;
  const bool room = could > current_ && w.idle >= 0;
  if (starved || room) start_trial(could, per_step, own, free);
  return "";
}

int ThreadGovernor::could_have(double own, double free) const {
  return std::clamp(static_cast<int>(std::floor(own + free + 0.25)), 1, max_);
}

void ThreadGovernor::start_trial(int threads, double step_seconds, double own, double free) {
  ++trials_;
  in_trial_ = true;
  before_trial_ = current_, before_step_ = step_seconds;
  trigger_own_ = own, trigger_free_ = free;
  current_ = threads;
}

ThreadGovernor ThreadGovernor::for_training(bool asked, std::string* why_not) {
  return ThreadGovernor(step_threads(), may_adapt_threads(asked, why_not));
}

double machine_idle_seconds() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0;
  if (!(f >> cpu >> user >> nice >> system >> idle >> iowait) || cpu != "cpu") return -1;
  static const long ticks = sysconf(_SC_CLK_TCK);
  return ticks > 0 ? static_cast<double>(idle + iowait) / static_cast<double>(ticks) : -1;
}

void StepClock::start() {
  wall0_ = seconds_since(kEpoch);
  cpu0_ = process_cpu_seconds();
  idle0_ = machine_idle_seconds();
}

StepTimes StepClock::stop() const {
  StepTimes t;
  t.wall = seconds_since(kEpoch) - wall0_;
  t.cpu = process_cpu_seconds() - cpu0_;
  const double idle = machine_idle_seconds();
  t.idle = idle >= 0 && idle0_ >= 0 ? idle - idle0_ : -1;
  return t;
}

bool may_adapt_threads(bool asked, std::string* why_not) {
  if (why_not) why_not->clear();
  if (!asked || omp_get_max_threads() < 2) return false;
  if (blas_same_bits_on_any_thread_count()) return true;
  if (why_not) {
    const char* core = std::getenv("OPENBLAS_CORETYPE");
    *why_not = fmt::format("cpu threads fixed at {}: this BLAS's GEMM{} gives other bits on other thread counts, "
                           "and a resumed run must match an uninterrupted one (engine/cpu/threads.h)",
                           omp_get_max_threads(), core ? fmt::format(" (OPENBLAS_CORETYPE={})", core) : "");
  }
  return false;
}

void set_step_threads(int n) {
  if (n >= 1 && omp_get_max_threads() != n) omp_set_num_threads(n);
}

int step_threads() { return omp_get_max_threads(); }

}  // namespace koff::cpu
