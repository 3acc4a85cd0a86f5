// AdamW exactly as torch.optim.AdamW, global-norm gradient clipping as
// torch.nn.utils.clip_grad_norm_, and Hugging Face's learning-rate schedules.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lora/adapter.h"

namespace loratune {

struct AdamWOptions {
  double lr = 5e-5;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  AdamW(const std::vector<LoraParam>& params, const AdamWOptions& options);
  // One update with learning rate `lr` (the schedule's value for this step).
  void step(double lr);
  int64_t step_count() const { return t_; }
  // Moments, for checkpoints: m and v of every parameter, in parameter order.
  std::vector<float>& exp_avg(size_t i) { return m_[i]; }
  std::vector<float>& exp_avg_sq(size_t i) { return v_[i]; }
  void set_step_count(int64_t t) { t_ = t; }

 private:
  std::vector<LoraParam> params_;
  AdamWOptions opt_;
  std::vector<std::vector<float>> m_, v_;
  int64_t t_ = 0;
};

// Global L2 norm of all gradients; when max_norm > 0 and the norm exceeds it, gradients are
// scaled by max_norm / (norm + 1e-6). Returns the norm before clipping.
double clip_grad_norm(const std::vector<LoraParam>& params, double max_norm);

enum class LrSchedule { kLinear, kCosine, kConstant };
LrSchedule parse_lr_schedule(const std::string& name);  // throws UsageError

// Learning rate for step `step` (0-based) of `total` steps, with linear warmup.
double scheduled_lr(LrSchedule schedule, double base_lr, int64_t step, int64_t total,
                    int64_t warmup);

}  // namespace loratune
