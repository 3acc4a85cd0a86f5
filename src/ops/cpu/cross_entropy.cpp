#include <cmath>
#include <limits>

#include "ops/cpu/fast_exp.h"
#include "ops/ops.h"

namespace loratune::ops {

double cross_entropy_forward_backward(float* dh, const float* h, const PackedWeight& w,
                                      const int* targets, int R, float grad_scale, float* scratch,
                                      int chunk) {
  const int C = w.in(), V = w.out();
  double loss = 0.0;
  for (int r0 = 0; r0 < R; r0 += chunk) {
    const int rows = std::min(chunk, R - r0);
    float* logits = scratch;  // [rows, V]
    linear_forward(logits, h + static_cast<long>(r0) * C, w, nullptr, rows);
#pragma omp parallel for schedule(static) reduction(+ : loss)
    for (int i = 0; i < rows; ++i) {
      float* row = logits + static_cast<long>(i) * V;
      float max_l = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : max_l)
      for (int j = 0; j < V; ++j) max_l = std::max(max_l, row[j]);
      const int t = targets[r0 + i];
      const float target_logit = row[t];
      // exp(logit − max) in place, summed in double (V terms); the gradient below scales it.
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j < V; ++j) {
        row[j] = fast_exp(row[j] - max_l);
        sum += row[j];
      }
      loss += std::log(sum) - static_cast<double>(target_logit - max_l);
      if (!dh) continue;
      // Softmax gradient in place: (p − onehot) · grad_scale. Values below the smallest
      // normal float become 0: on Intel cores every subnormal operand of the lm_head's input
      // gradient cost a microcode assist (that product ran 17 instead of 290 GFLOP/s on a
      // random model's sharp softmax), and what they add to dh is below 1e-38.
      const float inv = static_cast<float>(1.0 / sum);
      const float factor = inv * grad_scale;
#pragma omp simd
      for (int j = 0; j < V; ++j) {
        const float g = row[j] * factor;
        row[j] = g < std::numeric_limits<float>::min() ? 0.0f : g;
      }
      row[t] -= grad_scale;
    }
    if (dh) linear_backward(dh + static_cast<long>(r0) * C, logits, w, rows, false);
  }
  return loss;
}

}  // namespace loratune::ops
