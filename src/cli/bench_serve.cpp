// The serve figure of `loratune bench`: `loratune serve`'s engine and HTTP server in this
// process on a loopback port, loaded by 1, 4 and 16 concurrent clients.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <thread>

#include "cli/bench_figures.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "model/transformer.h"
#include "serve/engine.h"
#include "serve/http_server.h"
#include "serve/openai_api.h"
#include "tokenizer/tokenizer.h"

namespace loratune::cli::bench {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kClients[] = {1, 4, 16};

struct Load {
  int requests = 0, failed = 0, generated = 0;
  double seconds = 0;
  std::vector<double> latencies;  // seconds per request, sorted
};

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t i = std::min(sorted.size() - 1, static_cast<size_t>(p * (sorted.size() - 1) + 0.5));
  return sorted[i];
}

// `clients` threads send `requests` completions between them, each waiting for its answer
// before sending the next.
Load run_load(int port, int clients, int requests, const std::vector<int>& prompt, int new_tokens) {
  Load load;
  load.requests = requests;
  std::atomic<int> next{0}, failed{0}, generated{0};
  std::vector<std::vector<double>> latencies(clients);
  const std::string body = Json{
      {"model", "base"},
      {"prompt", prompt},
      {"max_tokens", new_tokens},
      {"temperature", 0}}.dump();
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(600);
      while (next++ < requests) {
        const auto start = Clock::now();
        auto res = client.Post("/v1/completions", body, "application/json");
        latencies[c].push_back(std::chrono::duration<double>(Clock::now() - start).count());
        try {
          if (!res || res->status != 200) throw Error("failed");
          generated += Json::parse(res->body)["usage"]["completion_tokens"].get<int>();
        } catch (const std::exception&) {
          ++failed;  // a lost or refused response
        }
      }
    });
  for (std::thread& t : threads) t.join();
  load.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  load.failed = failed;
  load.generated = generated;
  for (const auto& l : latencies) load.latencies.insert(load.latencies.end(), l.begin(), l.end());
  std::sort(load.latencies.begin(), load.latencies.end());
  return load;
}

// The warm-up, then each count of clients in turn: one figure line each.
void run_clients(int port, const std::vector<int>& prompt, int new_tokens, int slots,
                 std::vector<OJson>& lines) {
  run_load(port, 1, 1, prompt, 4);  // warm-up: every weight page touched once
  double single = 0;
  for (const int clients : kClients) {
    const Load load = run_load(port, clients, std::max(4, 2 * clients), prompt, new_tokens);
    const double rate = load.generated / std::max(load.seconds, 1e-9);
    if (clients == 1) single = rate;
    lines.push_back({{"figure", "serve"},
                     {"clients", clients},
                     {"requests", load.requests},
                     {"failed", load.failed},
                     {"prompt_tokens", static_cast<int>(prompt.size())},
                     {"max_tokens", new_tokens},
                     {"generated_tokens", load.generated},
                     {"seconds", load.seconds},
                     {"tokens_per_second", rate},
                     {"speedup_vs_1_client", rate / std::max(single, 1e-9)},
                     {"p50_latency_seconds", percentile(load.latencies, 0.5)},
                     {"p99_latency_seconds", percentile(load.latencies, 0.99)},
                     {"slots", slots},
                     {"precision", precision_name()},
                     {"threads", num_threads()}});
  }
}

}  // namespace

std::vector<OJson> serve_figure(const std::string& model_dir, const std::string& tokenizer_dir,
                                int prompt_tokens, int new_tokens) {
  Transformer model(model_dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tokenizer_dir);
  const ModelConfig& c = model.config();
  const int slots = kClients[std::size(kClients) - 1];
  const int context = prompt_tokens + new_tokens;
  serve::Engine engine(model, tok, slots, context, 4 * slots);
  const std::vector<serve::ServedModel> models = {{"base", nullptr}};
  const serve::ApiContext api{tok, c.generation, {}, models, context};  // no eos: full counts
  serve::ServerOptions options;
  options.port = 0;
  options.http_threads = 8 * slots;
  serve::HttpServer server(engine, api, options);
  const int port = server.bind();
  std::thread serving([&] { server.run(); });
  Rng rng(5);
  std::vector<int> prompt(prompt_tokens);
  for (int& t : prompt) t = static_cast<int>(rng.next_u64() % std::min(c.vocab_size, 100000));
  std::vector<OJson> lines;
  // The clients from a thread of their own: the engine runs on this one, which loaded the
  // model (serve/engine.h).
  std::exception_ptr failure;
  std::thread clients_thread([&] {
    try {
      run_clients(port, prompt, new_tokens, slots, lines);
    } catch (...) {
      failure = std::current_exception();
    }
    server.shutdown();
  });
  engine.run();
  clients_thread.join();
  serving.join();
  if (failure) std::rethrow_exception(failure);
  return lines;
}

}  // namespace loratune::cli::bench
