// Times one piece of a step's work for ops::step_totals (ops.h), from its start to the end of
// the scope: a product with a frozen weight (with its 2·N·in·out flops) or an attention call.
// Only the outermost calls hold one.
#pragma once

#include <chrono>
#include <cstdint>

namespace loratune::ops {

enum class StepWork { kProduct, kAttention };

class StepClock {
 public:
  explicit StepClock(StepWork work, int64_t flops = 0)
      : work_(work), flops_(flops), start_(std::chrono::steady_clock::now()) {}
  ~StepClock();
  StepClock(const StepClock&) = delete;
  StepClock& operator=(const StepClock&) = delete;

 private:
  StepWork work_;
  int64_t flops_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace loratune::ops
