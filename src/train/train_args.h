// Training settings under Hugging Face TrainingArguments / PEFT LoraConfig names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/template.h"
#include "lora/lora_config.h"
#include "train/optimizer.h"

namespace loratune {

enum class IntervalStrategy { kNo, kSteps, kEpoch };
IntervalStrategy parse_interval_strategy(const std::string& name, const char* option);

struct TrainArgs {
  std::string model;
  std::vector<std::string> data;
  std::vector<std::string> eval_data;  // empty: split eval_fraction off the training data
  std::string output_dir;
  std::string final_dir;  // empty: OUTPUT_DIR/final_model

  double num_train_epochs = 3.0;
  int64_t max_steps = -1;  // > 0 overrides num_train_epochs
  int per_device_train_batch_size = 8;
  int per_device_eval_batch_size = 8;
  int gradient_accumulation_steps = 1;
  double learning_rate = 5e-5;
  LrSchedule lr_scheduler_type = LrSchedule::kLinear;
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  uint64_t seed = 42;
  int logging_steps = 10;
  IntervalStrategy eval_strategy = IntervalStrategy::kNo;
  int64_t eval_steps = 0;  // 0: logging_steps, as HF
  IntervalStrategy save_strategy = IntervalStrategy::kSteps;
  int64_t save_steps = 500;
  int save_total_limit = 0;  // 0: keep all
  bool load_best_model_at_end = false;
  std::string metric_for_best_model = "eval_loss";  // lower is better

  LoraConfig lora;  // r, alpha, dropout, targets, rsLoRA

  data::TemplateKind template_kind = data::TemplateKind::kSeed;
  int max_length = 512;
  double data_fraction = 1.0;
  double eval_fraction = 0.2;
  bool shuffle = false;
  bool train_on_prompt = false;
  bool skip_bad_records = false;
  int threads = 0;
  std::string resume_from_checkpoint;  // a checkpoint folder or "latest"
  bool overwrite_output_dir = false;
  int max_group_tokens = 512;  // tokens per forward/backward pass (memory bound)
  std::string tokenizer;       // folder with the tokenizer files; empty: the model folder
  int64_t max_records = 0;     // > 0: only the first N records read (before data_fraction)
  bool progress_bar = true;    // the one-line progress bar on a terminal

  // Throws UsageError for inconsistent settings (HF's checks included).
  void validate() const;
};

}  // namespace loratune
