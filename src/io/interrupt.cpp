#include "kvscope/io/interrupt.hpp"

#include <atomic>
#include <csignal>

namespace kvscope {

namespace {

std::atomic<int> g_depth{0};  // live scopes (lock-free: read in signal handlers)
volatile std::sig_atomic_t g_fired = 0;
struct sigaction g_previous;

void on_sigint(int) {
  note_interrupt();  // only writes a sig_atomic_t: safe in a signal handler
}

}  // namespace

InterruptScope::InterruptScope() {
  if (g_depth++ > 0) return;
  outer_ = true;
  g_fired = 0;
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &g_previous);
}

InterruptScope::~InterruptScope() {
  --g_depth;
  if (outer_) sigaction(SIGINT, &g_previous, nullptr);
}

bool InterruptScope::fired() {
  return g_fired != 0;
}

bool interrupt_scope_active() {
  return g_depth > 0;
}

void note_interrupt() {
  g_fired = 1;
}

void throw_if_interrupted() {
  if (g_depth > 0 && g_fired) throw Interrupted();
}

}  // namespace kvscope
