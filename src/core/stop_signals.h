// SIGINT and SIGTERM, received by one thread of their own instead of interrupting whichever
// thread is running. oneDNN 2.6's JIT sgemm kernels point the stack pointer into the heap
// while they run (oneDNN issue 4845), so a signal handler run on such a thread writes its
// frame over heap memory: a signal meant to stop training cleanly corrupted the heap about one
// time in ten. With the signals blocked in every thread and taken by sigwait(), no handler
// ever runs on a compute thread.
#pragma once

#include <functional>

namespace loratune {

// Blocks SIGINT and SIGTERM and starts the thread that receives them. Call first in main(),
// before any other thread exists: threads inherit the mask of the thread that creates them.
// Without a listener, a signal ends the process as its default action does.
void take_stop_signals();

// While it lives, SIGINT and SIGTERM call `on_signal(signal)` on the signal thread (any code
// may run there, not only async-signal-safe calls). The previous listener is restored when it
// ends.
class StopSignalListener {
 public:
  explicit StopSignalListener(std::function<void(int)> on_signal);
  ~StopSignalListener();
  StopSignalListener(const StopSignalListener&) = delete;
  StopSignalListener& operator=(const StopSignalListener&) = delete;

 private:
  std::function<void(int)> previous_;
};

// In a forked child before exec: the signals unblocked again (async-signal-safe).
void unblock_stop_signals_in_child();

}  // namespace loratune
