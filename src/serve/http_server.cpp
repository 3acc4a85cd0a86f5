#include "serve/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>

#include "core/error.h"

namespace loratune::serve {

namespace {

void send_json(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, error_body(e));
}

long long now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string sse(const Json& body) {
  return "data: " + body.dump() + "\n\n";
}

// cpp-httplib 0.11 listens with a backlog of 5 connections. When more clients connect at once,
// Linux drops the final handshake packets of the rest; their requests then arrive only after
// a retransmission, which can come later than the keep-alive wait in which the worker
// thread expects the first request, and the connection is closed unanswered. The socket is
// made to listen again with the system's largest backlog.
class WideBacklogServer : public httplib::Server {
 public:
  void widen_backlog() { ::listen(svr_sock_, SOMAXCONN); }
};

// Counts a response from its start until it has been written (or abandoned).
class OpenResponse {
 public:
  explicit OpenResponse(std::atomic<int>& count) : count_(count) { ++count_; }
  ~OpenResponse() { --count_; }

 private:
  std::atomic<int>& count_;
};

}  // namespace

HttpServer::HttpServer(Engine& engine, const ApiContext& api, const ServerOptions& options)
    : engine_(engine), api_(api), options_(options), http_(std::make_unique<WideBacklogServer>()) {
  const int threads = options_.http_threads;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_->set_payload_max_length(size_t{16} << 20);
  http_->set_keep_alive_timeout(2);
  add_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const int port = options_.port == 0 ? http_->bind_to_any_port(options_.host)
                   : http_->bind_to_port(options_.host, options_.port) ? options_.port
                                                                       : -1;
  if (port < 0)
    throw Error("cannot listen on " + options_.host + ":" + std::to_string(options_.port), "",
                "is the port in use? --port 0 takes any free one");
  static_cast<WideBacklogServer&>(*http_).widen_backlog();
  return port;
}

void HttpServer::run() {
  http_->listen_after_bind();
  if (!shutting_down_) return;
  std::unique_lock<std::mutex> lock(mutex_);
  shut_down_.wait(lock, [&] { return shutdown_done_; });
}

void HttpServer::shutdown() {
  if (shutting_down_.exchange(true)) return;
  engine_.shutdown();
  for (int i = 0; i < 100 && open_responses_ > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  http_->stop();
  std::lock_guard<std::mutex> lock(mutex_);
  shutdown_done_ = true;
  shut_down_.notify_all();
}

void HttpServer::add_routes() {
  http_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty() || req.path == "/health")
      return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + options_.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "Incorrect API key provided", "", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http_->set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        const std::string what = res.status == 404
                                     ? "Unknown request URL: " + req.method + " " + req.path
                                     : "HTTP error " + std::to_string(res.status);
        send_error(res, ApiError(res.status, what));
        return httplib::Server::HandlerResponse::Handled;
      }));
  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const EngineStats s = engine_.stats();
    send_json(res, 200,
              {{"status", "ok"},
               {"slots", engine_.slots()},
               {"slots_busy", s.running},
               {"queued", s.queued},
               {"requests_finished", s.finished},
               {"requests_cancelled", s.cancelled}});
  });
  http_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, models_body(api_.models, now_seconds()));
  });
  auto generate = [this](Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    auto open = std::make_shared<OpenResponse>(open_responses_);
    ParsedRequest parsed;
    std::shared_ptr<Job> job;
    try {
      parsed = parse_request(endpoint, req.body, api_);
      job = engine_.submit(parsed.generation);
      if (!job)
        throw ApiError(503,
                       "The server is busy (every slot and the queue are taken), or is "
                       "shutting down; retry later",
                       "", "server_busy", "server_error");
    } catch (const ApiError& e) {
      send_error(res, e);
      return;
    }
    const bool chat = endpoint == Endpoint::kChatCompletions;
    const ResponseInfo info{endpoint, (chat ? "chatcmpl-" : "cmpl-") + std::to_string(++next_id_),
                            now_seconds(), parsed.model->name};
    if (!parsed.stream) {
      std::string text;
      while (!job->wait(text, 1000)) {
      }
      if (!job->error().empty()) {
        send_error(res, ApiError(500, job->error(), "", "", "server_error"));
        return;
      }
      const std::vector<int> ids = job->token_ids();
      send_json(
          res, 200,
          completion_body(info, text, job->finish_reason(), job->prompt_tokens(),
                          job->completion_tokens(), parsed.return_token_ids ? &ids : nullptr));
      return;
    }
    struct Stream {
      bool first = true;
      bool ended = false;
    };
    auto state = std::make_shared<Stream>();
    const bool include_usage = parsed.include_usage;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, info, state, include_usage, chat](size_t, httplib::DataSink& sink) {
          if (state->ended) return false;
          std::string text;
          const bool finished = job->wait(text, 200);
          std::string out;
          if (state->first && chat) out += sse(chunk_body(info, "", true, nullptr));
          state->first = false;
          if (!text.empty()) out += sse(chunk_body(info, text, false, nullptr));
          if (finished) {
            if (!job->error().empty()) {
              out += sse(error_body(ApiError(500, job->error(), "", "", "server_error")));
            } else {
              const FinishReason reason = job->finish_reason();
              out += sse(chunk_body(info, "", false, &reason));
              if (include_usage)
                out += sse(usage_chunk_body(info, job->prompt_tokens(), job->completion_tokens()));
            }
            out += "data: [DONE]\n\n";
          }
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            job->cancel();  // the client has gone: its slot is freed at the next step
            return false;
          }
          if (finished) {
            state->ended = true;
            sink.done();
          }
          return true;
        },
        [job, open](bool success) {
          if (!success) job->cancel();
        });
  };
  http_->Post("/v1/completions", [generate](const httplib::Request& req, httplib::Response& res) {
    generate(Endpoint::kCompletions, req, res);
  });
  http_->Post("/v1/chat/completions",
              [generate](const httplib::Request& req, httplib::Response& res) {
                generate(Endpoint::kChatCompletions, req, res);
              });
}

}  // namespace loratune::serve
