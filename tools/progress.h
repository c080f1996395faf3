// Progress output for long commands: one line per report, rewritten in place on a terminal.
#pragma once

#include <fmt/core.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

#include "engine/tensor/interrupt.h"

namespace koff::cli {

// SIGINT/SIGTERM set the engine's interrupt flag (engine/tensor/interrupt.h): long jobs stop within
// seconds wherever they are (a step in progress is abandoned, the last checkpoint stays; at a step
// boundary a checkpoint is saved). A second signal exits at once (status 130), for when even that
// is too slow; the next start removes what it left behind.
inline std::atomic<bool>& interrupt_flag() { return koff::interrupt_flag(); }
extern "C" inline void koff_on_interrupt(int) {
  static std::atomic<int> count{0};
  if (count.fetch_add(1) > 0) {
    static const char msg[] = "\nkoff: second interrupt: exiting at once\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(130);
  }
  static const char msg[] = "\nkoff: interrupted: stopping (Ctrl-C again to exit at once)\n";
  (void)!::write(2, msg, sizeof msg - 1);
  koff::interrupt_flag().store(true);
}
inline const std::atomic<bool>* install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = koff_on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  return &koff::interrupt_flag();
}

inline std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "?";
  const long s = static_cast<long>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s / 60) % 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

class Progress {
 public:
  Progress() : tty_(isatty(fileno(stderr))), start_(std::chrono::steady_clock::now()) {}
  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  // On a terminal the line is redrawn; in a log each report is its own line.
  void report(const std::string& line) {
    if (tty_) fmt::print(stderr, "\r\033[K{}", line);
    else fmt::print(stderr, "{}\n", line);
    std::fflush(stderr);
  }
  void finish() {
    if (tty_) fmt::print(stderr, "\n");
  }
  // A message that must stay (checkpoint saved, eval results): ends the redrawn line first.
  void note(const std::string& line) {
    fmt::print(stderr, "{}{}\n", tty_ ? "\r\033[K" : "", line);
    std::fflush(stderr);
  }

 private:
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace koff::cli
