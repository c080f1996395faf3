#include "engine/tensor/interrupt.h"

#include <fmt/core.h>

namespace koff {

namespace {
thread_local int shielded = 0;  // NoInterruptScope depth of this thread
}  // namespace

std::atomic<bool>& interrupt_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

bool interrupt_pending() { return shielded == 0 && interrupt_flag().load(std::memory_order_relaxed); }

void check_interrupt(const char* where) {
  if (interrupt_pending()) throw Interrupted(fmt::format("interrupted during {}", where));
}

NoInterruptScope::NoInterruptScope() { ++shielded; }
NoInterruptScope::~NoInterruptScope() { --shielded; }

}  // namespace koff
