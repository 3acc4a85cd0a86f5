// The HTTP side of `loratune serve`: the OpenAI routes over an Engine, server-sent events for
// streams, API-key checks, and a shutdown that lets every response finish first.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "serve/engine.h"
#include "serve/openai_api.h"

namespace httplib {
class Server;
}

namespace loratune::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;      // 0: any free port
  std::string api_key;  // empty: no check
  int http_threads = 32;
};

class HttpServer {
 public:
  HttpServer(Engine& engine, const ApiContext& api, const ServerOptions& options);
  ~HttpServer();
  // Binds the socket; returns the port (throws Error when it cannot).
  int bind();
  // Serves until shutdown() has finished.
  void run();
  // Ends every request (queued and running ones as cancelled), waits up to a few seconds for
  // their responses to be written, and makes run() return. Safe from another thread; later
  // calls do nothing.
  void shutdown();

 private:
  void add_routes();
  Engine& engine_;
  const ApiContext& api_;
  ServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  std::atomic<int> open_responses_{0};
  std::atomic<bool> shutting_down_{false};
  std::mutex mutex_;
  std::condition_variable shut_down_;
  bool shutdown_done_ = false;
  std::atomic<long long> next_id_{0};
};

}  // namespace loratune::serve
