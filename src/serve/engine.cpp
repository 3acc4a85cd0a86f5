#include "serve/engine.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "core/error.h"

namespace loratune::serve {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      break;
  }
  return "cancelled";
}

bool Job::wait(std::string& text, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                    [&] { return finished_ || !pending_.empty(); });
  text += pending_;
  pending_.clear();
  return finished_;
}

FinishReason Job::finish_reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reason_;
}

int Job::completion_tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(tokens_.size());
}

std::vector<int> Job::token_ids() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tokens_;
}

std::string Job::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

void Job::emit(const std::string& text) {
  if (text.empty()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  pending_ += text;
  changed_.notify_all();
}

void Job::finish(FinishReason reason, const std::vector<int>& tokens, const std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  finished_ = true;
  reason_ = reason;
  tokens_ = tokens;
  error_ = error;
  changed_.notify_all();
}

struct Engine::Running {
  std::shared_ptr<Job> job;
  GenerationRequest request;
  int slot = 0;
  Sampler sampler;
  tokenizer::StreamDecoder decoder;
  std::vector<int> history;  // prompt and output, for the repetition penalty
  std::vector<int> input;    // the next pass's tokens: the prompt, then the last token
  std::vector<int> produced;
  std::string held;  // decoded text not sent yet, as it may begin a stop string
  bool done = false;

  // Sends what cannot be the start of a stop string; true when a stop string was found
  // (the text before it sent).
  bool send_safe_text() {
    for (const std::string& s : request.stop) {
      const size_t at = held.find(s);
      if (at != std::string::npos) {
        job->emit(held.substr(0, at));
        held.clear();
        return true;
      }
    }
    size_t keep = 0;  // the longest tail of `held` that begins some stop string
    for (const std::string& s : request.stop)
      for (size_t n = std::min(s.size() - 1, held.size()); n > keep; --n)
        if (held.compare(held.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
    job->emit(held.substr(0, held.size() - keep));
    held.erase(0, held.size() - keep);
    return false;
  }

  // Ends the request; `flush` sends the text still held (not after a stop string, nor when
  // cancelled).
  void end(FinishReason reason, bool flush) {
    if (flush) {
      held += decoder.finish();
      if (send_safe_text()) reason = FinishReason::kStop;
      job->emit(held);
    }
    job->finish(reason, produced);
    done = true;
  }
};

Engine::Engine(Transformer& model, const tokenizer::Tokenizer& tokenizer, int slots, int context,
               int max_queue)
    : model_(model),
      tokenizer_(tokenizer),
      slots_(slots),
      context_(context),
      max_queue_(max_queue),
      cache_(model.config(), slots, context) {}

Engine::~Engine() {
  shutdown();
}

std::shared_ptr<Job> Engine::submit(GenerationRequest request) {
  if (request.prompt.empty() ||
      static_cast<int>(request.prompt.size()) + request.max_tokens > context_)
    throw Error("the request does not fit the context");
  auto job = std::make_shared<Job>();
  job->prompt_tokens_ = static_cast<int>(request.prompt.size());
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_ || static_cast<int>(queue_.size()) >= max_queue_) return nullptr;
  queue_.emplace_back(job, std::move(request));
  work_.notify_one();
  return job;
}

void Engine::shutdown() {
  std::unique_lock<std::mutex> lock(mutex_);
  stopping_ = true;
  work_.notify_all();
  work_.wait(lock, [&] { return !running_loop_; });
}

EngineStats Engine::stats() {
  EngineStats s;
  s.running = running_;
  s.finished = finished_;
  s.cancelled = cancelled_;
  std::lock_guard<std::mutex> lock(mutex_);
  s.queued = static_cast<int>(queue_.size());
  return s;
}

void Engine::run() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (running_loop_) throw std::logic_error("Engine::run runs on one thread at a time");
    running_loop_ = true;
  }
  // However the loop ends, shutdown() learns of it.
  struct Returned {
    Engine& e;
    ~Returned() {
      {
        std::lock_guard<std::mutex> lock(e.mutex_);
        e.running_loop_ = false;
      }
      e.work_.notify_all();
    }
  } returned{*this};
  std::vector<Running> running;
  std::vector<int> free_slots;
  for (int s = slots_ - 1; s >= 0; --s) free_slots.push_back(s);
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_.wait(lock, [&] { return stopping_ || !running.empty() || !queue_.empty(); });
      if (stopping_) {
        for (auto& [job, request] : queue_) job->finish(FinishReason::kCancelled, {});
        queue_.clear();
        for (Running& r : running) r.end(FinishReason::kCancelled, false);
        return;
      }
      // Join while there are free slots, within a prefill budget of one context per step
      // (the first always joins), so that one step's activations stay bounded.
      int prefill = 0;
      for (const Running& r : running) prefill += static_cast<int>(r.input.size());
      while (!queue_.empty() && !free_slots.empty()) {
        const int n = static_cast<int>(queue_.front().second.prompt.size());
        if (prefill > 0 && prefill + n > context_) break;
        auto [job, request] = std::move(queue_.front());
        queue_.pop_front();
        const int slot = free_slots.back();
        free_slots.pop_back();
        cache_.set_length(slot, 0);
        std::vector<int> prompt = request.prompt;
        Sampler sampler(request.sampling);
        running.push_back({std::move(job),
                           std::move(request),
                           slot,
                           std::move(sampler),
                           tokenizer::StreamDecoder(tokenizer_, /*skip_special=*/true),
                           prompt,
                           prompt,
                           {}});
        prefill += n;
      }
      running_ = static_cast<int>(running.size());
    }
    for (Running& r : running)
      if (r.job->cancelled_) r.end(FinishReason::kCancelled, false);
    retire(running, free_slots);
    if (running.empty()) continue;
    try {
      step(running);
    } catch (const std::exception& e) {
      for (Running& r : running) {
        r.job->finish(FinishReason::kCancelled, r.produced, e.what());
        r.done = true;
      }
    }
    retire(running, free_slots);
  }
}

void Engine::retire(std::vector<Running>& running, std::vector<int>& free_slots) {
  std::erase_if(running, [&](const Running& r) {
    if (!r.done) return false;
    free_slots.push_back(r.slot);
    ++(r.job->finish_reason() == FinishReason::kCancelled ? cancelled_ : finished_);
    return true;
  });
  running_ = static_cast<int>(running.size());
}

void Engine::step(std::vector<Running>& running) {
  // Sequences with the same adapter side by side: they share each LoRA product.
  std::stable_sort(running.begin(), running.end(), [](const Running& a, const Running& b) {
    return std::less<const LoraAdapter*>()(a.request.adapter, b.request.adapter);
  });
  std::vector<int> tokens, rows;
  std::vector<SequenceSpan> spans;
  for (const Running& r : running) {
    const int start = static_cast<int>(tokens.size());
    const int n = static_cast<int>(r.input.size());
    spans.push_back({start, n, r.slot, r.request.adapter});
    tokens.insert(tokens.end(), r.input.begin(), r.input.end());
    rows.push_back(start + n - 1);
  }
  const int V = model_.config().vocab_size;
  logits_.resize(rows.size() * static_cast<size_t>(V));
  model_.forward(tokens, spans, &cache_, rows, logits_.data());
  for (size_t i = 0; i < running.size(); ++i) {
    Running& r = running[i];
    const int token = r.sampler.next(&logits_[i * static_cast<size_t>(V)], V, r.history);
    r.produced.push_back(token);
    r.history.push_back(token);
    r.input.assign(1, token);
    const auto& eos = r.request.eos_ids;
    if (std::find(eos.begin(), eos.end(), token) != eos.end()) {
      r.end(FinishReason::kStop, true);
      continue;
    }
    r.held += r.decoder.push(token);
    if (r.send_safe_text()) {
      r.end(FinishReason::kStop, false);
    } else if (static_cast<int>(r.produced.size()) >= r.request.max_tokens) {
      // (submit() made prompt + max_tokens fit the context, so the cache never overflows.)
      r.end(FinishReason::kLength, true);
    }
  }
}

}  // namespace loratune::serve
