// The Qwen2 model on the CPU in fp32: several sequences packed into one batch of N tokens
// (no padding), optionally with a LoRA adapter applied unmerged, optionally continuing
// from a KV cache (inference) or followed by the backward pass (training).
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "lora/adapter.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "ops/ops.h"

namespace loratune {

// Tokens [start, start + length) of the packed batch form one sequence. With a KV cache the
// sequence continues slot `slot` (positions start at the cache length); without one it
// starts at position 0. In forward() and loss() a sequence may run with an adapter of its own
// in place of the model's (several adapters served in one batch); not in training.
struct SequenceSpan {
  int start;
  int length;
  int slot = 0;
  const LoraAdapter* adapter = nullptr;
};

// What one layer's forward leaves behind: the backward reads it (training keeps one per
// layer; inference reuses one for every layer).
struct LayerActivations {
  std::vector<float> x_in;       // [N, C] residual stream entering the layer
  std::vector<float> rstd1;      // [N]
  ops::SavedActivation q, k, v;  // [N, H·D], [N, Hkv·D] ×2, after RoPE
  ops::SavedActivation att;      // [N, H·D] attention output (o_proj input)
  std::vector<float> lse;        // [N, H] softmax log-sum-exp
  // Qwen3's per-head q/k norms: q and k before them [N, H·D], [N, Hkv·D], and their rstd
  // [N, H], [N, Hkv] (empty for other models).
  std::vector<float> q_pre, k_pre, rstd_q, rstd_k;
  std::vector<float> x_mid;       // [N, C] residual stream after attention
  std::vector<float> rstd2;       // [N]
  ops::SavedActivation gate, up;  // [N, F] MLP pre-activations (bf16 in bf16 mode)
  std::array<std::vector<float>, kNumLoraModules> lora_u;  // [N, r] x·Aᵀ per LoRA module
  // Training with LoRA dropout: the kept features of each module's input, bit i % 64 of word
  // [n · ⌈in/64⌉ + i / 64] for feature i of token n (the backward reuses the forward's mask).
  std::array<std::vector<uint64_t>, kNumLoraModules> lora_keep;
};

// LoRA dropout in training: each (module, token, feature) is kept with probability 1 − p,
// drawn from a counter-based hash of `seed` and the position, so the mask does not depend on
// how a step is split into groups; the forward keeps it as bits for the backward.
struct Dropout {
  float p = 0.0f;
  uint64_t seed = 0;
  int64_t token_offset = 0;  // index of this pass's first token in the whole step's batch
  float scale() const { return 1.0f / (1.0f - p); }  // the factor of a kept feature
};

// Which features dropout keeps (and scales by 1/(1 − p)) of token `token` at the input of
// layer `layer`'s LoRA module `m` whose input has `in` features: bit i of
// bits[ops::lora_keep_words(in)].
void dropout_mask(uint64_t* bits, const Dropout& d, int layer, LoraModule m, int token, int in);

struct LossSum {
  double sum = 0.0;   // Σ −log p(label) over labelled positions
  int64_t count = 0;  // number of labelled positions
};

// Number of positions with a loss target: position t of a sequence counts when
// labels[t + 1] (same sequence) is not −100. Gradient accumulation divides by the total
// over the whole window.
int64_t count_loss_targets(const std::vector<int>& labels, const std::vector<SequenceSpan>& seqs);

class Transformer {
 public:
  // Loads config.json, generation_config.json and the weights of a model folder
  // (`share_file_pages`: see ModelWeights).
  explicit Transformer(const std::string& model_dir, bool share_file_pages = false);

  // Folds the adapter into the weights (W + s·B·A); later passes need no adapter for it.
  void merge_adapter(const LoraAdapter& adapter) { weights_->merge_lora(adapter, config_); }

  // The adapter applied (unmerged) by every pass from now on; nullptr for the base model.
  void set_adapter(LoraAdapter* adapter) { adapter_ = adapter; }

  // Runs tokens[N] (split into `seqs`) through the model and writes the logits of the packed
  // rows listed in `logit_rows` to logits[logit_rows.size(), V]. With `cache`, each
  // sequence's keys and values are appended to its slot and attention sees the past. The
  // products keep one kernel at every row count (ops::OneKernelPerShape).
  // Throws Error for token ids outside the vocabulary or a full cache.
  void forward(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
               KVCache* cache, const std::vector<int>& logit_rows, float* logits);

  // Training pass: causal-LM loss on `labels` (aligned with tokens; the logits at position
  // t predict labels[t + 1] of the same sequence; −100 is ignored), then the backward,
  // adding grad_scale · ∂loss_sum/∂θ into the adapter's gradients. Sequences run in groups
  // of at most `max_group_tokens` tokens so activation memory stays bounded; the result
  // does not depend on the grouping.
  LossSum forward_backward(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
                           const std::vector<int>& labels, float grad_scale,
                           const Dropout& dropout = {}, int max_group_tokens = 512);

  // The same loss without the backward (evaluation): LoRA applied, dropout off; passes hold
  // up to max_group_tokens · num_hidden_layers tokens (the same activation memory).
  LossSum loss(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
               const std::vector<int>& labels, int max_group_tokens = 512);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return *weights_; }

 private:
  void check_inputs(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
                    const KVCache* cache) const;
  // Embeds tokens into x_ and fills positions; returns attention spans.
  void embed(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
             const KVCache* cache);
  // One block, x_ updated in place; activations saved into `a`.
  void layer_forward(int l, LayerActivations& a, const std::vector<SequenceSpan>& seqs,
                     KVCache* cache, const Dropout& dropout, bool training);
  // `lower_lora`: a layer below has LoRA, so this layer's input gradient is needed.
  void layer_backward(int l, LayerActivations& a, const std::vector<SequenceSpan>& seqs,
                      const Dropout& dropout, bool lower_lora);
  // The adapter sequence `s` runs with (nullptr: the base model).
  const LoraAdapter* adapter_for(const SequenceSpan& s) const;
  // Whether any sequence's adapter has LoRA on layer l's module m.
  bool has_lora(int l, LoraModule m, const std::vector<SequenceSpan>& seqs) const;
  // y += s·B·A·dropout(x) for module m, for the rows of each sequence whose adapter targets it.
  void lora_forward(int l, LoraModule m, LayerActivations& a, float* y, const float* x,
                    const std::vector<SequenceSpan>& seqs, const Dropout& dropout, bool training);
  void lora_backward(int l, LoraModule m, LayerActivations& a, float* dx, const float* dy,
                     const float* x, int N, const Dropout& dropout);
  // The dropout mask of module m's input (none outside training or without dropout). The
  // forward draws it into a.lora_keep; the backward (`saved`) reads it from there.
  ops::KeepMask lora_keep(int l, LoraModule m, LayerActivations& a, int N, int in,
                          const Dropout& dropout, bool training, bool saved);
  LossSum run_groups(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
                     const std::vector<int>& labels, float grad_scale, const Dropout& dropout,
                     int max_group_tokens, bool backward);
  LossSum group_pass(const std::vector<int>& tokens, const std::vector<SequenceSpan>& seqs,
                     const std::vector<int>& labels, float grad_scale, const Dropout& dropout,
                     bool backward);

  ModelConfig config_;
  std::unique_ptr<ModelWeights> weights_;
  LoraAdapter* adapter_ = nullptr;
  std::vector<float> inv_freq_;  // [D/2]
  // Working memory, grown on demand and reused between calls.
  std::vector<float> x_, xn_, rows_, rstd_final_;
  // q/k/v and the attention output in fp32 where they are kept in bf16 (forward), widened
  // again (backward).
  std::vector<float> q_, k_, v_, att_;
  std::vector<int> pos_;
  std::vector<ops::AttentionSpan> spans_;
  std::vector<LayerActivations> acts_;  // one per layer in training, one shared otherwise
  std::vector<float> dx_, dxn_, dq_, dk_, dv_, datt_, dh_, dup_, du_, loss_scratch_;
  std::vector<float> dq_pre_, dk_pre_;  // Qwen3: q/k gradients before the per-head norms
  std::vector<int> loss_rows_, loss_targets_;
};

}  // namespace loratune
