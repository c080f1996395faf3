// Cancellation: Ctrl-C (SIGINT) and SIGTERM must be honoured within seconds anywhere, also inside a
// long step, an evaluation or an export, not only between steps. The CLI's signal handler sets one
// process-wide flag; the engine polls it where work is dispatched (every op, engine/ops/dispatch.h;
// every collective wait, engine/dist; every file write, engine/io) and throws koff::Interrupted, which
// unwinds like any error (temporaries are removed by their destructors) and which the CLI turns into
// "interrupted, the last checkpoint is kept" and exit status 130.
//
// Code that must finish once started (writing the checkpoint that an interrupt at a step boundary
// asks for) runs inside a NoInterruptScope.
#pragma once

#include <atomic>

#include "engine/tensor/error.h"

namespace koff {

class Interrupted : public Error {
 public:
  explicit Interrupted(const std::string& message) : Error(message) {}
};

// Set from a signal handler (lock-free, async-signal-safe); never reset by the engine.
std::atomic<bool>& interrupt_flag();

// True when an interrupt is pending and this thread is not inside a NoInterruptScope.
bool interrupt_pending();

// Throws Interrupted (naming `where`) when interrupt_pending().
void check_interrupt(const char* where = "work");

class NoInterruptScope {
 public:
  NoInterruptScope();
  ~NoInterruptScope();
  NoInterruptScope(const NoInterruptScope&) = delete;
  NoInterruptScope& operator=(const NoInterruptScope&) = delete;
};

}  // namespace koff
