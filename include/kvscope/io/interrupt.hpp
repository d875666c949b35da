// Ctrl-C inside an embedding program (the Python module): while an InterruptScope lives,
// SIGINT sets a flag instead of ending the process, and the next check point (the start
// of every forward pass) throws Interrupted. The call then unwinds like any other error:
// partial outputs are removed and no result that looks finished is left. Without a scope
// (the command line) SIGINT behaves as before: RemoveOnSignal unlinks partial files and
// the process dies of the signal.
#pragma once

#include "kvscope/io/error.hpp"

namespace kvscope {

class Interrupted : public Error {
 public:
  Interrupted() : Error("interrupted (SIGINT)") {}
};

class InterruptScope {
 public:
  InterruptScope();   // installs the flag-setting SIGINT handler (scopes nest)
  ~InterruptScope();  // restores the previous handler
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;
  // Whether SIGINT arrived while this scope (or an inner one) was alive.
  static bool fired();

 private:
  bool outer_ = false;
};

// Whether a scope is alive: RemoveOnSignal's handler then only sets the flag on SIGINT.
bool interrupt_scope_active();
// Async-signal-safe: records a SIGINT.
void note_interrupt();
// Throws Interrupted when a SIGINT arrived inside a live scope.
void throw_if_interrupted();

}  // namespace kvscope
