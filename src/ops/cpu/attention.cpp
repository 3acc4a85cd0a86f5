#include <cblas.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ops/ops.h"

namespace loratune::ops {

void attention_forward(float* out, const float* q, const AttentionSpan* spans, int n_spans, int H,
                       int Hkv, int D, int kv_stride) {
  const int group = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const long q_stride = static_cast<long>(H) * D;
  // Each (sequence, head) pair is one task: scores = Q·Kᵀ, causal softmax, Q·V, with BLAS
  // running single-threaded inside the parallel loop.
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic)
    for (int s = 0; s < n_spans; ++s)
      for (int h = 0; h < H; ++h) {
        const AttentionSpan& sp = spans[s];
        if (sp.q_len == 0) continue;
        const int n_keys = sp.past + sp.q_len;
        const int g = h / group;
        scores.resize(static_cast<size_t>(sp.q_len) * n_keys);
        const float* qh = q + sp.q_start * q_stride + h * D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, sp.q_len, n_keys, D, scale, qh,
                    q_stride, sp.k + g * D, kv_stride, 0.0f, scores.data(), n_keys);
        for (int i = 0; i < sp.q_len; ++i) {
          float* row = scores.data() + static_cast<long>(i) * n_keys;
          const int visible = sp.past + i + 1;
          float max_s = -std::numeric_limits<float>::infinity();
          for (int j = 0; j < visible; ++j) max_s = std::max(max_s, row[j]);
          float sum = 0.0f;
          for (int j = 0; j < visible; ++j) sum += (row[j] = std::exp(row[j] - max_s));
          const float inv = 1.0f / sum;
          for (int j = 0; j < visible; ++j) row[j] *= inv;
          for (int j = visible; j < n_keys; ++j) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, sp.q_len, D, n_keys, 1.0f,
                    scores.data(), n_keys, sp.v + g * D, kv_stride, 0.0f,
                    out + sp.q_start * q_stride + h * D, q_stride);
      }
  }
}

}  // namespace loratune::ops
