// The generation loop: prefill the prompt into a KV cache, then decode one token at a time.
#pragma once

#include <functional>
#include <vector>

#include "generate/sampler.h"
#include "model/transformer.h"

namespace loratune {

struct GenerateOptions {
  int max_new_tokens = 200;
  SamplingOptions sampling;
  std::vector<int> eos_token_ids;  // generation stops after emitting one of these
};

// Returns the new tokens (an eos that ended generation included); `on_token` sees each as
// soon as it is chosen.
std::vector<int> generate(Transformer& model, const std::vector<int>& prompt,
                          const GenerateOptions& options,
                          const std::function<void(int)>& on_token = nullptr);

}  // namespace loratune
