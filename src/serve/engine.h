// Continuous batching for the server: requests wait in a bounded queue, join the running
// batch between decode steps when a KV-cache slot is free, and leave it when they finish.
// Every step is one forward pass over all running sequences (whole prompts of the newly
// joined, one token of the others), each with its own adapter (unmerged LoRA per sequence).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "generate/sampler.h"
#include "lora/adapter.h"
#include "model/kv_cache.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace loratune::serve {

struct GenerationRequest {
  std::vector<int> prompt;
  const LoraAdapter* adapter = nullptr;  // nullptr: the base model
  int max_tokens = 16;
  SamplingOptions sampling;
  std::vector<int> eos_ids;       // generation ends after one of these (not in the text)
  std::vector<std::string> stop;  // ... or before one of these strings (not in the text)
};

// "stop" (an eos token or a stop string), "length" (max_tokens or the context) or "cancelled"
// (the client left, or the server is shutting down).
enum class FinishReason { kStop, kLength, kCancelled };
const char* finish_reason_name(FinishReason r);

// One request as its HTTP handler sees it while the engine runs it.
class Job {
 public:
  // Waits up to `timeout_ms` for news; appends the text produced since the last call to
  // `text` and returns true once the request has finished (all its text delivered).
  bool wait(std::string& text, int timeout_ms);
  // Asks the engine to drop the request at its next step.
  void cancel() { cancelled_ = true; }
  FinishReason finish_reason() const;
  int prompt_tokens() const { return prompt_tokens_; }
  int completion_tokens() const;
  // The generated ids (an eos that ended generation included), once finished.
  std::vector<int> token_ids() const;
  // Set when the engine failed on this request (the message); empty otherwise.
  std::string error() const;

 private:
  friend class Engine;
  void emit(const std::string& text);
  void finish(FinishReason reason, const std::vector<int>& tokens, const std::string& error = "");

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string pending_;
  bool finished_ = false;
  FinishReason reason_ = FinishReason::kStop;
  std::vector<int> tokens_;
  std::string error_;
  int prompt_tokens_ = 0;
  std::atomic<bool> cancelled_{false};
};

// What /health reports.
struct EngineStats {
  int running = 0;          // sequences in the batch
  int queued = 0;           // requests waiting for a slot
  long long finished = 0;   // requests ended as stop or length
  long long cancelled = 0;  // requests ended as cancelled
};

class Engine {
 public:
  // `slots` sequences at most run at once, each up to `context` positions (prompt and
  // output); up to `max_queue` more wait.
  Engine(Transformer& model, const tokenizer::Tokenizer& tokenizer, int slots, int context,
         int max_queue);
  ~Engine();

  // Runs the requests on the calling thread until shutdown(). Call it on the thread that
  // loaded the model: OpenMP keeps a pool of workers for each thread that has run parallel
  // regions, and with more workers than cores libgomp makes them sleep between regions
  // instead of waiting awake (a decode step has over a hundred regions: with the engine on a
  // thread of its own, one client got 17.3 against 20.9 tokens/s, docs/performance.md).
  void run();

  // Queues a request (its prompt plus max_tokens must fit the context); nullptr when the
  // queue is full or the engine is shutting down.
  std::shared_ptr<Job> submit(GenerationRequest request);
  // Stops taking requests and ends every queued and running one as cancelled; returns when
  // run() has returned (at once where it does not run). Safe from any thread.
  void shutdown();

  EngineStats stats();
  int slots() const { return slots_; }

 private:
  struct Running;
  void step(std::vector<Running>& running);
  // Drops the finished sequences from `running`, freeing their slots.
  void retire(std::vector<Running>& running, std::vector<int>& free_slots);

  Transformer& model_;
  const tokenizer::Tokenizer& tokenizer_;
  const int slots_, context_, max_queue_;
  KVCache cache_;
  std::vector<float> logits_;  // [rows, V] of the last step, reused (run()'s thread only)
  std::mutex mutex_;
  std::condition_variable work_;  // new work, stopping, run() returning
  std::deque<std::pair<std::shared_ptr<Job>, GenerationRequest>> queue_;
  bool stopping_ = false;
  bool running_loop_ = false;  // run() is running
  std::atomic<int> running_{0};
  std::atomic<long long> finished_{0}, cancelled_{0};
};

}  // namespace loratune::serve
