// Checkpoints: OUTPUT_DIR/checkpoint-STEP/ with the adapter files, the optimizer moments,
// the scheduler and RNG state, and trainer_state.json (HF's layout and key names). A
// checkpoint is written into a temporary folder and renamed, so it is whole or absent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/json_file.h"
#include "lora/adapter.h"
#include "train/optimizer.h"

namespace loratune {

struct TrainerState {
  int64_t global_step = 0;
  double epoch = 0.0;
  int64_t max_steps = 0;
  std::optional<double> best_metric;
  std::string best_model_checkpoint;  // empty: none yet
  Json log_history = Json::array();
  uint64_t seed = 0;
};

Json trainer_state_to_json(const TrainerState& s);
TrainerState trainer_state_from_json(const Json& j, const std::string& source);

std::string checkpoint_dir(const std::string& output_dir, int64_t step);
// Writes the whole checkpoint atomically; returns its folder.
std::string save_checkpoint(const std::string& output_dir, LoraAdapter& adapter, AdamW& optimizer,
                            const TrainerState& state, double lr, const Json& training_args);
// Restores the adapter weights, optimizer moments and trainer state from `dir`.
TrainerState load_checkpoint(const std::string& dir, LoraAdapter& adapter, AdamW& optimizer);
// The checkpoint-STEP folders of `output_dir`, by increasing step.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir);
// Deletes the oldest checkpoints beyond `limit`, never `keep` (the best one).
void rotate_checkpoints(const std::string& output_dir, int limit, const std::string& keep);
void remove_tree(const std::string& path);

}  // namespace loratune
