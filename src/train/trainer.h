// The trainer: HF Trainer semantics for a LoRA adapter on a Qwen2 model (DESIGN.md §3):
// epochs of shuffled batches, gradient accumulation normalised by the labelled tokens of the
// window, clipping, AdamW, lr schedule, logging, evaluation, checkpoints, best model, resume.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"
#include "model/transformer.h"
#include "train/train_args.h"

namespace loratune {

struct EvalResult {
  double loss = 0.0;  // token-weighted mean over the eval set
  double perplexity = 0.0;
  int64_t tokens = 0;  // labelled positions
};

// Loss of `model` (with whatever adapter it has) over `examples`, in batches.
EvalResult evaluate(Transformer& model, const std::vector<data::TokenizedExample>& examples,
                    int batch_size, int max_group_tokens);

// What a training job did, for benchmarks.
struct TrainSummary {
  int64_t train_examples = 0, eval_examples = 0;
  int64_t train_tokens = 0;  // tokens of every batch trained on (this run's steps)
  int64_t steps = 0;         // optimizer steps run (this run)
  int64_t eval_batches = 0;  // forward-only batches of all evaluations
  double train_seconds = 0;  // the training loop, evaluations and checkpoints excluded
  double eval_seconds = 0;
  double last_eval_loss = 0;
};

// Runs the whole training job; returns the process exit status (0, or 130 when a signal
// stopped it after writing a checkpoint). `summary` (may be null) receives the counts.
int run_training(const TrainArgs& args, const Json& args_json, TrainSummary* summary = nullptr);

}  // namespace loratune
