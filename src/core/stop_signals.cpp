#include "core/stop_signals.h"

#include <pthread.h>

#include <csignal>
#include <mutex>
#include <thread>
#include <utility>

namespace loratune {

namespace {

std::mutex g_mutex;
std::function<void(int)> g_listener;  // guarded by g_mutex

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

void receive_signals() {
  pthread_setname_np(pthread_self(), "stop-signals");
  const sigset_t set = stop_set();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    std::function<void(int)> listener;
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      listener = g_listener;
    }
    if (listener) {
      listener(sig);
      continue;
    }
    // No one listens: the default action (the process ends, killed by `sig`).
    std::signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
    raise(sig);
  }
}

}  // namespace

void take_stop_signals() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread(receive_signals).detach();
}

StopSignalListener::StopSignalListener(std::function<void(int)> on_signal) {
  std::lock_guard<std::mutex> lock(g_mutex);
  previous_ = std::exchange(g_listener, std::move(on_signal));
}

StopSignalListener::~StopSignalListener() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_listener = std::move(previous_);
}

void unblock_stop_signals_in_child() {
  const sigset_t set = stop_set();
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

}  // namespace loratune
