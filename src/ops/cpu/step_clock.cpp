#include "ops/cpu/step_clock.h"

#include <atomic>

#include "ops/ops.h"

namespace loratune::ops {

namespace {

std::atomic<int64_t> g_product_ns{0}, g_product_flops{0}, g_attention_ns{0};

}  // namespace

StepClock::~StepClock() {
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::steady_clock::now() - start_)
                         .count();
  if (work_ == StepWork::kAttention) {
    g_attention_ns += ns;
    return;
  }
  g_product_ns += ns;
  g_product_flops += flops_;
}

StepTotals step_totals() {
  return {static_cast<double>(g_product_ns.load()) * 1e-9,
          static_cast<double>(g_product_flops.load()),
          static_cast<double>(g_attention_ns.load()) * 1e-9};
}

void reset_step_totals() {
  g_product_ns = 0;
  g_product_flops = 0;
  g_attention_ns = 0;
}

}  // namespace loratune::ops
