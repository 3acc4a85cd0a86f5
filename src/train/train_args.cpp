#include "train/train_args.h"

#include "core/error.h"

namespace loratune {

IntervalStrategy parse_interval_strategy(const std::string& name, const char* option) {
  if (name == "no") return IntervalStrategy::kNo;
  if (name == "steps") return IntervalStrategy::kSteps;
  if (name == "epoch") return IntervalStrategy::kEpoch;
  throw UsageError(std::string(option) + " must be no, steps or epoch (got '" + name + "')");
}

void TrainArgs::validate() const {
  if (model.empty()) throw UsageError("missing --model");
  if (data.empty()) throw UsageError("missing --data", "", "give a JSON or JSONL file");
  if (output_dir.empty()) throw UsageError("missing --output-dir");
  if (!(num_train_epochs > 0) && max_steps <= 0)
    throw UsageError("--num-train-epochs must be positive (or set --max-steps)");
  if (per_device_train_batch_size <= 0 || per_device_eval_batch_size <= 0)
    throw UsageError("batch sizes must be positive");
  if (gradient_accumulation_steps <= 0)
    throw UsageError("--gradient-accumulation-steps must be positive");
  if (!(learning_rate >= 0)) throw UsageError("--learning-rate must be >= 0");
  if (warmup_steps < 0 || !(warmup_ratio >= 0 && warmup_ratio <= 1))
    throw UsageError("--warmup-steps must be >= 0 and --warmup-ratio in [0, 1]");
  if (!(weight_decay >= 0)) throw UsageError("--weight-decay must be >= 0");
  if (logging_steps <= 0) throw UsageError("--logging-steps must be positive");
  if (save_strategy == IntervalStrategy::kSteps && save_steps <= 0)
    throw UsageError("--save-steps must be positive");
  if (eval_strategy == IntervalStrategy::kSteps && eval_steps < 0)
    throw UsageError("--eval-steps must be positive");
  if (save_total_limit < 0) throw UsageError("--save-total-limit must be >= 0");
  if (max_length < 2) throw UsageError("--max-length must be at least 2");
  if (!(data_fraction > 0 && data_fraction <= 1))
    throw UsageError("--data-fraction must be in (0, 1]");
  if (!(eval_fraction >= 0 && eval_fraction < 1))
    throw UsageError("--eval-fraction must be in [0, 1)");
  if (metric_for_best_model != "eval_loss" && metric_for_best_model != "loss")
    throw UsageError("--metric-for-best-model must be eval_loss (or loss)");
  if (load_best_model_at_end) {
    if (eval_strategy == IntervalStrategy::kNo)
      throw UsageError("--load-best-model-at-end needs an --eval-strategy");
    if (eval_strategy != save_strategy)
      throw UsageError(
          "--load-best-model-at-end needs the same --eval-strategy and --save-strategy", "",
          "as in Hugging Face TrainingArguments");
    if (save_strategy == IntervalStrategy::kSteps &&
        save_steps % (eval_steps > 0 ? eval_steps : logging_steps) != 0)
      throw UsageError(
          "--save-steps must be a multiple of --eval-steps with --load-best-model-at-end");
  }
  lora.validate();
}

}  // namespace loratune
