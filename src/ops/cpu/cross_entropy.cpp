#include <cblas.h>

#include <cmath>
#include <limits>

#include "ops/cpu/fast_exp.h"
#include "ops/ops.h"

namespace loratune::ops {

double cross_entropy_forward_backward(float* dh, const float* h, const float* w, const int* targets,
                                      int R, int C, int V, float grad_scale, float* scratch,
                                      int chunk) {
  double loss = 0.0;
  for (int r0 = 0; r0 < R; r0 += chunk) {
    const int rows = std::min(chunk, R - r0);
    float* logits = scratch;  // [rows, V]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, V, C, 1.0f,
                h + static_cast<long>(r0) * C, C, w, C, 0.0f, logits, V);
#pragma omp parallel for schedule(static) reduction(+ : loss)
    for (int i = 0; i < rows; ++i) {
      float* row = logits + static_cast<long>(i) * V;
      float max_l = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : max_l)
      for (int j = 0; j < V; ++j) max_l = std::max(max_l, row[j]);
      double sum = 0.0;  // in double: V terms
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j < V; ++j) sum += fast_exp(row[j] - max_l);
      const int t = targets[r0 + i];
      loss += std::log(sum) - static_cast<double>(row[t] - max_l);
      if (!dh) continue;
      // Softmax gradient in place: (p − onehot) · grad_scale.
      const float inv = static_cast<float>(1.0 / sum);
      const float factor = inv * grad_scale;
#pragma omp simd
      for (int j = 0; j < V; ++j) row[j] = fast_exp(row[j] - max_l) * factor;
      row[t] -= grad_scale;
    }
    if (dh)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, C, V, 1.0f, logits, V, w, C,
                  0.0f, dh + static_cast<long>(r0) * C, C);
  }
  return loss;
}

}  // namespace loratune::ops
