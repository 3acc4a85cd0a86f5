#include "generate/generator.h"

#include <algorithm>

#include "core/error.h"

namespace loratune {

std::vector<int> generate(Transformer& model, const std::vector<int>& prompt,
                          const GenerateOptions& options,
                          const std::function<void(int)>& on_token) {
  if (prompt.empty()) throw UsageError("the prompt is empty", "", "give at least one token");
  if (options.max_new_tokens < 0) throw UsageError("--max-new-tokens must be >= 0");
  const ModelConfig& c = model.config();
  const int capacity = static_cast<int>(prompt.size()) + options.max_new_tokens;
  if (c.max_position_embeddings > 0 && capacity > c.max_position_embeddings)
    throw UsageError("prompt plus new tokens (" + std::to_string(capacity) +
                         ") exceed max_position_embeddings (" +
                         std::to_string(c.max_position_embeddings) + ")",
                     "", "shorten the prompt or lower --max-new-tokens");
  KVCache cache(c, 1, capacity);
  Sampler sampler(options.sampling);
  std::vector<float> logits(c.vocab_size);
  std::vector<int> history = prompt;
  std::vector<int> produced;
  std::vector<int> step = prompt;
  while (static_cast<int>(produced.size()) < options.max_new_tokens) {
    const int n = static_cast<int>(step.size());
    model.forward(step, {{0, n, 0}}, &cache, {n - 1}, logits.data());
    const int token = sampler.next(logits.data(), c.vocab_size, history);
    produced.push_back(token);
    history.push_back(token);
    if (on_token) on_token(token);
    const auto& eos = options.eos_token_ids;
    if (std::find(eos.begin(), eos.end(), token) != eos.end()) break;
    step.assign(1, token);
  }
  return produced;
}

}  // namespace loratune
