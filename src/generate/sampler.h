// Next-token choice as Hugging Face generate() makes it: repetition penalty, then (when
// sampling) temperature, top-k and top-p, then a draw; greedy argmax otherwise.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace loratune {

struct SamplingOptions {
  bool do_sample = false;
  float temperature = 1.0f;
  int top_k = 50;  // 0 disables
  float top_p = 1.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // Chooses a token from logits[V] (modified in place); `history` holds the prompt and the
  // tokens generated so far (for the repetition penalty).
  int next(float* logits, int V, const std::vector<int>& history);

 private:
  SamplingOptions opt_;
  Rng rng_;
  std::vector<int> order_;
  std::vector<float> probs_;
};

}  // namespace loratune
