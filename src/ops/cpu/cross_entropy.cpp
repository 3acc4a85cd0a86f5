#include <cmath>
#include <limits>

#include "ops/cpu/bf16_round.h"
#include "ops/cpu/fast_exp.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/cpu/row_max.h"
#include "ops/ops.h"

namespace loratune::ops {

namespace {

// One row of logits[V]: returns −log softmax(row)[t]; with `grad`, the row becomes the
// softmax gradient (p − onehot(t)) · grad_scale. Compiled twice, for AVX-512 and for the
// baseline, the copy taken chosen when the program loads (the loops are 152k wide for Qwen2:
// twice the vector width halves their time).
__attribute__((target_clones("avx512f", "default"))) double softmax_row(float* row, int V, int t,
                                                                        float grad_scale,
                                                                        bool grad) {
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

}  // namespace

double cross_entropy_forward_backward(float* dh, const float* h, const PackedWeight& w,
                                      const int* targets, int R, float grad_scale, float* scratch,
                                      int chunk) {
  const int C = w.in(), V = w.out();
  // A bf16 lm_head reads its input gradient in bf16: each row is rounded in place right after
  // it is written, while it is still in cache, into the first half of its own bytes (so the
  // bf16 rows lie 2V values apart and need no buffer of their own).
  const bool bf16 = dh && w.format() == WeightFormat::kRowsBF16;
  double loss = 0.0;
  for (int r0 = 0; r0 < R; r0 += chunk) {
    const int rows = std::min(chunk, R - r0);
    float* logits = scratch;  // [rows, V]
    linear_forward(logits, h + static_cast<long>(r0) * C, w, nullptr, rows);
#pragma omp parallel for schedule(static) reduction(+ : loss)
    for (int i = 0; i < rows; ++i) {
      float* row = logits + static_cast<long>(i) * V;
      loss += softmax_row(row, V, targets[r0 + i], grad_scale, dh != nullptr);
      if (bf16) round_to_bf16_in_place(row, V);
    }
    if (!dh) continue;
    float* dh_rows = dh + static_cast<long>(r0) * C;
    if (bf16)
      onednn::backward_bf16(dh_rows, reinterpret_cast<const uint16_t*>(logits), 2L * V, w, rows,
                            false);
    else
      linear_backward(dh_rows, logits, w, rows, false);
  }
  return loss;
}

}  // namespace loratune::ops
