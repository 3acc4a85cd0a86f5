#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/fast_exp.h"
#include "ops/cpu/row_max.h"
#include "ops/cpu/small_gemm.h"
#include "ops/ops.h"

namespace loratune::ops {

namespace {

// Query rows per block: a block of rows only multiplies the keys up to its last row, which
// skips nearly half of the causal [T, T] work, and blocks make many small parallel tasks.
constexpr int kRowBlock = 64;

// scores[q_len, n_keys] = scale · Q_h · K_gᵀ
void head_scores(float* scores, const float* qh, long q_stride, const float* kg, int kv_stride,
                 int q_len, int n_keys, int D, float scale) {
  small_sgemm(false, true, q_len, n_keys, D, scale, qh, q_stride, kg, kv_stride, 0.0f, scores,
              n_keys);
}

// row[first, end) = softmax of itself, the rest of row[0, n) = 0; returns the log-sum-exp.
float causal_softmax(float* row, int first, int end, int n) {
  const float max_s = row_max(row + first, end - first);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = first; j < end; ++j) sum += (row[j] = fast_exp(row[j] - max_s));
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int j = first; j < end; ++j) row[j] *= inv;
  std::fill(row, row + first, 0.0f);
  std::fill(row + end, row + n, 0.0f);
  return max_s + std::log(sum);
}

// The first key that the query at `position` sees.
int first_key(int position, int window) {
  return window > 0 ? std::max(0, position - window + 1) : 0;
}

// Keys per block of a single query's attention: a block of keys (16 KB at D = 64) stays in L1
// while every query head of its group reads it.
constexpr int kKeyBlock = 64;

// A span of one query (decode) against kv head g: the group's query heads together, a block
// of keys at a time, so that each key and value is read from memory once for the group, not
// once per head (per-head tasks re-read them from L3 at long contexts). out and lse at the
// group's first head; scores holds group · n_keys floats.
void single_query_group(float* out, float* lse, const float* q, const float* k, const float* v,
                        int kv_stride, int group, int D, int n_keys, float scale, float* scores) {
  for (int j0 = 0; j0 < n_keys; j0 += kKeyBlock) {
    const int keys = std::min(kKeyBlock, n_keys - j0);
    for (int i = 0; i < group; ++i)
      small_sgemm(false, true, 1, keys, D, scale, q + i * D, D,
                  k + static_cast<long>(j0) * kv_stride, kv_stride, 0.0f,
                  scores + static_cast<long>(i) * n_keys + j0, keys);
  }
  for (int i = 0; i < group; ++i) {
    const float l = causal_softmax(scores + static_cast<long>(i) * n_keys, 0, n_keys, n_keys);
    if (lse) lse[i] = l;
  }
  // out = Σ_blocks P_block · V_block, each block's sum added to the last.
  for (int j0 = 0; j0 < n_keys; j0 += kKeyBlock) {
    const int keys = std::min(kKeyBlock, n_keys - j0);
    for (int i = 0; i < group; ++i)
      small_sgemm(false, false, 1, D, keys, 1.0f, scores + static_cast<long>(i) * n_keys + j0, keys,
                  v + static_cast<long>(j0) * kv_stride, kv_stride, j0 > 0 ? 1.0f : 0.0f,
                  out + i * D, D);
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const AttentionSpan* spans,
                       int n_spans, int H, int Hkv, int D, int kv_stride, int window) {
  const int group = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const long q_stride = static_cast<long>(H) * D;
  // One task per (sequence, block of query rows, head): scores = Q·Kᵀ over the keys the block
  // can see, causal softmax, P·V, with BLAS running single-threaded inside the parallel loop.
  // A sequence of one query (decode) is one task per kv head instead (single_query_group):
  // chosen by the sequence's own length, so that it attends the same way in any batch.
  // The task grid is rectangular (every sequence gets the longest one's blocks; the blocks a
  // sequence lacks are skipped) so that the decode loop allocates nothing here.
  int max_len = 0;
  for (int s = 0; s < n_spans; ++s) max_len = std::max(max_len, spans[s].q_len);
  const int n_blocks = (max_len + kRowBlock - 1) / kRowBlock;
#pragma omp parallel
  {
    thread_local std::vector<float> scores;
#pragma omp for collapse(3) schedule(dynamic) nowait
    for (int s = 0; s < n_spans; ++s)
      for (int b = 0; b < n_blocks; ++b)
        for (int h = 0; h < H; ++h) {
          const AttentionSpan& sp = spans[s];
          const int i0 = b * kRowBlock;
          if (i0 >= sp.q_len || sp.q_len == 1) continue;
          const int rows = std::min(kRowBlock, sp.q_len - i0);
          // The block sees keys lo..lo+n_keys−1: from its first row's first key to its last row.
          const int lo = first_key(sp.past + i0, window);
          const int n_keys = sp.past + i0 + rows - lo;
          const int g = h / group;
          const long q_row = static_cast<long>(sp.q_start) + i0;
          const long kv_off = static_cast<long>(lo) * kv_stride + g * D;
          scores.resize(static_cast<size_t>(rows) * n_keys);
          head_scores(scores.data(), q + q_row * q_stride + h * D, q_stride, sp.k + kv_off,
                      kv_stride, rows, n_keys, D, scale);
          for (int i = 0; i < rows; ++i) {
            const int position = sp.past + i0 + i;
            const float l =
                causal_softmax(scores.data() + static_cast<long>(i) * n_keys,
                               first_key(position, window) - lo, position + 1 - lo, n_keys);
            if (lse) lse[(q_row + i) * H + h] = l;
          }
          small_sgemm(false, false, rows, D, n_keys, 1.0f, scores.data(), n_keys, sp.v + kv_off,
                      kv_stride, 0.0f, out + q_row * q_stride + h * D, q_stride);
        }
#pragma omp for collapse(2) schedule(dynamic)
    for (int s = 0; s < n_spans; ++s)
      for (int g = 0; g < Hkv; ++g) {
        const AttentionSpan& sp = spans[s];
        if (sp.q_len != 1) continue;
        const int lo = first_key(sp.past, window), n_keys = sp.past + 1 - lo;
        const long kv_off = static_cast<long>(lo) * kv_stride + g * D;
        const long at = static_cast<long>(sp.q_start) * q_stride + g * group * D;
        scores.resize(static_cast<size_t>(group) * n_keys);
        single_query_group(
            out + at, lse ? lse + static_cast<long>(sp.q_start) * H + g * group : nullptr, q + at,
            sp.k + kv_off, sp.v + kv_off, kv_stride, group, D, n_keys, scale, scores.data());
      }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const AttentionSpan* spans, int n_spans, int H, int Hkv, int D,
                        int window) {
  const int group = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const long q_stride = static_cast<long>(H) * D;
  const int kv_stride = Hkv * D;
  // One task per (sequence, kv head): the query heads of a group all add into the same dk/dv
  // columns, so they run in one task. Inside, blocks of query rows see only their keys.
#pragma omp parallel
  {
    thread_local std::vector<float> p, dp;
#pragma omp for collapse(2) schedule(dynamic)
    for (int s = 0; s < n_spans; ++s)
      for (int g = 0; g < Hkv; ++g) {
        const int T = spans[s].q_len, start = spans[s].q_start;
        if (T == 0) continue;
        for (int t = 0; t < T; ++t) {
          std::fill_n(dk + (static_cast<long>(start) + t) * kv_stride + g * D, D, 0.0f);
          std::fill_n(dv + (static_cast<long>(start) + t) * kv_stride + g * D, D, 0.0f);
        }
        p.resize(static_cast<size_t>(std::min(T, kRowBlock)) * T);
        dp.resize(p.size());
        for (int h = g * group; h < (g + 1) * group; ++h)
          for (int i0 = 0; i0 < T; i0 += kRowBlock) {
            // The block's keys lo..lo+n_keys−1, as in the forward.
            const int rows = std::min(kRowBlock, T - i0), lo = first_key(i0, window);
            const int n_keys = i0 + rows - lo;
            const long kv_off = (static_cast<long>(start) + lo) * kv_stride + g * D;
            const float* kg = k + kv_off;
            const float* vg = v + kv_off;
            float* dkg = dk + kv_off;
            float* dvg = dv + kv_off;
            const long off = (static_cast<long>(start) + i0) * q_stride + h * D;
            // P = exp(scale·Q·Kᵀ − lse) over the visible keys.
            head_scores(p.data(), q + off, q_stride, kg, kv_stride, rows, n_keys, D, scale);
            // dP = dO·Vᵀ
            small_sgemm(false, true, rows, n_keys, D, 1.0f, dout + off, q_stride, vg, kv_stride,
                        0.0f, dp.data(), n_keys);
            for (int i = 0; i < rows; ++i) {
              const float l = lse[(static_cast<long>(start) + i0 + i) * H + h];
              float* prow = p.data() + static_cast<long>(i) * n_keys;
              float* dprow = dp.data() + static_cast<long>(i) * n_keys;
              const float* dorow = dout + off + i * q_stride;
              const float* orow = out + off + i * q_stride;
              float dot = 0.0f;  // Σ_d dO·O: the softmax backward's row term
              for (int d = 0; d < D; ++d) dot += dorow[d] * orow[d];
              const int first = first_key(i0 + i, window) - lo, end = i0 + i + 1 - lo;
#pragma omp simd
              for (int j = first; j < end; ++j) prow[j] = fast_exp(prow[j] - l);
              std::fill(prow, prow + first, 0.0f);
              std::fill(prow + end, prow + n_keys, 0.0f);
              // dS = P ∘ (dP − rowdot) in place of dP, apart from P, which dV still needs.
#pragma omp simd
              for (int j = 0; j < n_keys; ++j) dprow[j] = prow[j] * (dprow[j] - dot);
            }
            // dV += Pᵀ·dO; dQ = scale·dS·K; dK += scale·dSᵀ·Q
            small_sgemm(true, false, n_keys, D, rows, 1.0f, p.data(), n_keys, dout + off, q_stride,
                        1.0f, dvg, kv_stride);
            small_sgemm(false, false, rows, D, n_keys, scale, dp.data(), n_keys, kg, kv_stride,
                        0.0f, dq + off, q_stride);
            small_sgemm(true, false, n_keys, D, rows, scale, dp.data(), n_keys, q + off, q_stride,
                        1.0f, dkg, kv_stride);
          }
      }
  }
}

}  // namespace loratune::ops
