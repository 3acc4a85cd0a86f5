// The Qwen2 forward pass on the CPU in fp32: several sequences packed into one batch of N
// tokens (no padding), optionally continuing from a KV cache.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace loratune {

// Tokens [start, start + length) of the packed batch form one sequence. With a KV cache the
// sequence continues slot `slot` (positions start at the cache length); without one it
// starts at position 0.
struct SequenceSpan {
  int start;
  int length;
  int slot = 0;
};

class Transformer {
 public:
  // Loads config.json, generation_config.json and the weights of a model folder.
  explicit Transformer(const std::string& model_dir);

  // Runs tokens[N] (split into `seqs`) through the model and writes the logits of the packed
  // rows listed in `logit_rows` to logits[logit_rows.size(), V]. With `cache`, each
  // sequence's keys and values are appended to its slot and attention sees the past.
  // Throws Error for token ids outside the vocabulary or a full cache.
  void forward(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
               KVCache* cache, const std::vector<int>& logit_rows, float* logits);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return *weights_; }

 private:
  void check_inputs(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
                    const KVCache* cache, const std::vector<int>& logit_rows) const;

  ModelConfig config_;
  std::unique_ptr<ModelWeights> weights_;
  std::vector<float> inv_freq_;  // [D/2]
  // Activations, grown on demand and reused between calls.
  std::vector<float> x_, xn_, q_, k_, v_, att_, gate_, up_, rows_;
  std::vector<int> pos_;
};

}  // namespace loratune
