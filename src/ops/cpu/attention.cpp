#include <cblas.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ops/ops.h"

namespace loratune::ops {

namespace {

// scores[q_len, n_keys] = scale · Q_h · K_gᵀ
void head_scores(float* scores, const float* qh, long q_stride, const float* kg, int kv_stride,
                 int q_len, int n_keys, int D, float scale) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, q_len, n_keys, D, scale, qh, q_stride, kg,
              kv_stride, 0.0f, scores, n_keys);
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const AttentionSpan* spans,
                       int n_spans, int H, int Hkv, int D, int kv_stride) {
  const int group = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const long q_stride = static_cast<long>(H) * D;
  // Each (sequence, head) pair is one task: scores = Q·Kᵀ, causal softmax, P·V, with BLAS
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
        head_scores(scores.data(), q + sp.q_start * q_stride + h * D, q_stride, sp.k + g * D,
                    kv_stride, sp.q_len, n_keys, D, scale);
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
          if (lse) lse[(static_cast<long>(sp.q_start) + i) * H + h] = max_s + std::log(sum);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, sp.q_len, D, n_keys, 1.0f,
                    scores.data(), n_keys, sp.v + g * D, kv_stride, 0.0f,
                    out + sp.q_start * q_stride + h * D, q_stride);
      }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const AttentionSpan* spans, int n_spans, int H, int Hkv, int D) {
  const int group = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const long q_stride = static_cast<long>(H) * D;
  const int kv_stride = Hkv * D;
  // One task per (sequence, kv head): the query heads of a group all add into the same dk/dv
  // columns, so they run in one task.
#pragma omp parallel
  {
    std::vector<float> p, dp, rowdot;
#pragma omp for collapse(2) schedule(dynamic)
    for (int s = 0; s < n_spans; ++s)
      for (int g = 0; g < Hkv; ++g) {
        const int T = spans[s].q_len, start = spans[s].q_start;
        if (T == 0) continue;
        const float* kg = k + static_cast<long>(start) * kv_stride + g * D;
        const float* vg = v + static_cast<long>(start) * kv_stride + g * D;
        float* dkg = dk + static_cast<long>(start) * kv_stride + g * D;
        float* dvg = dv + static_cast<long>(start) * kv_stride + g * D;
        for (int t = 0; t < T; ++t)
          for (int d = 0; d < D; ++d) dkg[t * kv_stride + d] = dvg[t * kv_stride + d] = 0.0f;
        p.resize(static_cast<size_t>(T) * T);
        dp.resize(static_cast<size_t>(T) * T);
        rowdot.resize(T);
        for (int h = g * group; h < (g + 1) * group; ++h) {
          const long off = start * q_stride + h * D;
          // P = exp(scale·Q·Kᵀ − lse), causal.
          head_scores(p.data(), q + off, q_stride, kg, kv_stride, T, T, D, scale);
          for (int i = 0; i < T; ++i) {
            const float l = lse[(static_cast<long>(start) + i) * H + h];
            float* row = p.data() + static_cast<long>(i) * T;
            for (int j = 0; j <= i; ++j) row[j] = std::exp(row[j] - l);
            for (int j = i + 1; j < T; ++j) row[j] = 0.0f;
            float dot = 0.0f;  // Σ_d dO·O: the softmax backward's row term
            for (int d = 0; d < D; ++d)
              dot += dout[off + i * q_stride + d] * out[off + i * q_stride + d];
            rowdot[i] = dot;
          }
          // dV += Pᵀ·dO; dP = dO·Vᵀ
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, p.data(), T,
                      dout + off, q_stride, 1.0f, dvg, kv_stride);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, 1.0f, dout + off, q_stride,
                      vg, kv_stride, 0.0f, dp.data(), T);
          // dS = P ∘ (dP − rowdot), then scaled into dQ and dK.
          for (int i = 0; i < T; ++i) {
            float* prow = p.data() + static_cast<long>(i) * T;
            const float* dprow = dp.data() + static_cast<long>(i) * T;
            for (int j = 0; j <= i; ++j) prow[j] *= dprow[j] - rowdot[i];
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, scale, p.data(), T, kg,
                      kv_stride, 0.0f, dq + off, q_stride);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, scale, p.data(), T, q + off,
                      q_stride, 1.0f, dkg, kv_stride);
        }
      }
  }
}

}  // namespace loratune::ops
