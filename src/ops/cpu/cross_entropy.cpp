#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/cpu_features.h"
#include "ops/cpu/bf16_round.h"
#include "ops/cpu/fast_exp.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/cpu/row_max.h"
#include "ops/cpu/step_clock.h"
#include "ops/ops.h"

namespace loratune::ops {

namespace {

// One row of logits[V]: returns −log softmax(row)[t]; with `grad`, the row becomes the
// softmax gradient (p − onehot(t)) · grad_scale.
inline double softmax_row_body(float* row, int V, int t, float grad_scale, bool grad) {
  const float max_l = row_max(row, V);
  const float target_logit = row[t];
  // exp(logit − max) in place, summed in double (V terms); the gradient below scales it.
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < V; ++j) {
    row[j] = fast_exp(row[j] - max_l);
    sum += row[j];
  }
  if (grad) {
    // Gradients below the smallest normal float become 0, and their inputs are zeroed
    // before the multiply: on Intel cores every subnormal result or operand is a microcode
    // assist (this loop ran at a third of its speed on a random model's sharp softmax, the
    // lm_head's input gradient at 17 instead of 290 GFLOP/s), and what they add to dh is
    // below 1e-38.
    const float factor = static_cast<float>(1.0 / sum) * grad_scale;
    const float smallest = std::numeric_limits<float>::min() / factor;
#pragma omp simd
    for (int j = 0; j < V; ++j) row[j] = (row[j] < smallest ? 0.0f : row[j]) * factor;
    row[t] -= grad_scale;
  }
  return std::log(sum) - static_cast<double>(target_logit - max_l);
}

// Compiled twice, for AVX-512 and for the baseline, taken as the CPU has (the loops are 152k
// wide for Qwen2: twice the vector width halves their time).
__attribute__((target("avx512f"), flatten)) double softmax_row_avx512(float* row, int V, int t,
                                                                      float grad_scale, bool grad) {
  return softmax_row_body(row, V, t, grad_scale, grad);
}
__attribute__((flatten)) double softmax_row_avx2(float* row, int V, int t, float grad_scale,
                                                 bool grad) {
  return softmax_row_body(row, V, t, grad_scale, grad);
}

double softmax_row(float* row, int V, int t, float grad_scale, bool grad) {
  static const bool avx512 = cpu_features().avx512();
  return (avx512 ? softmax_row_avx512 : softmax_row_avx2)(row, V, t, grad_scale, grad);
}

}  // namespace

size_t cross_entropy_scratch_floats(const PackedWeight& w, int chunk) {
  const size_t logits = static_cast<size_t>(chunk) * w.out();
  return holds_bf16(w.format()) ? (logits + 1) / 2 : logits;
}

double cross_entropy_forward_backward(float* dh, const float* h, const PackedWeight& w,
                                      const int* targets, int R, float grad_scale, float* scratch,
                                      int chunk) {
  const int C = w.in(), V = w.out();
  // In bf16 the logits are bf16, as autocast's lm_head returns them (its loss casts them to
  // fp32): a kRowsBF16 product writes them rounded (half the bytes), each row is widened into
  // the thread's fp32 row for the softmax, and the gradient goes back rounded into the same
  // row, the lm_head's bf16 input gradient. The emulating kBlocksBF16 rounds its fp32 logits.
  // (kGroupsBF16, generation's, writes bf16 logits too but has no input gradient.)
  const bool bf16_logits = holds_bf16(w.format());
  const bool round_logits = w.format() == WeightFormat::kBlocksBF16;
  double loss = 0.0;
  for (int r0 = 0; r0 < R; r0 += chunk) {
    const int rows = std::min(chunk, R - r0);
    const float* x = h + static_cast<long>(r0) * C;
    uint16_t* logits16 = reinterpret_cast<uint16_t*>(scratch);  // [rows, V] (bf16_logits)
    float* logits = scratch;                                    // [rows, V] (otherwise)
    const LinearOutBF16 out16{logits16, &w};
    if (bf16_logits)
      linear_forward_to_bf16(&out16, 1, x, rows);
    else
      linear_forward(logits, x, w, nullptr, rows);
#pragma omp parallel reduction(+ : loss)
    {
      thread_local std::vector<float> wide;  // one row, widened (bf16_logits)
      if (bf16_logits && wide.size() < static_cast<size_t>(V)) wide.resize(V);
#pragma omp for schedule(static)
      for (int i = 0; i < rows; ++i) {
        float* row = bf16_logits ? wide.data() : logits + static_cast<long>(i) * V;
        if (bf16_logits) widen_bf16(row, logits16 + static_cast<long>(i) * V, V);
        if (round_logits) round_to_bf16_precision(row, row, V);
        loss += softmax_row(row, V, targets[r0 + i], grad_scale, dh != nullptr);
        if (bf16_logits && dh) round_to_bf16(logits16 + static_cast<long>(i) * V, row, V);
      }
    }
    if (!dh) continue;
    float* dh_rows = dh + static_cast<long>(r0) * C;
    if (bf16_logits) {
      const StepClock clock(StepWork::kProduct, int64_t{2} * rows * C * V);
      onednn::backward_bf16(dh_rows, logits16, V, w, rows, false);
    } else {
      linear_backward(dh_rows, logits, w, rows, false);
    }
  }
  return loss;
}

}  // namespace loratune::ops
