#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu_features.h"
#include "ops/cpu/attention_products.h"
#include "ops/cpu/fast_exp.h"
#include "ops/cpu/row_max.h"
#include "ops/cpu/small_gemm.h"
#include "ops/cpu/step_clock.h"
#include "ops/ops.h"

namespace loratune::ops {

namespace {

// Query rows per block: a block of rows only multiplies the keys up to its last row, and
// blocks make many small parallel tasks.
constexpr int kRowBlock = 64;
constexpr int kAll = BandProduct::kAll;

// The row stride of a buffer of n_keys columns that the products read down its columns (Kᵀ,
// scores): whole vectors and one more, so that the rows of a block do not all fall into the
// same few L1 sets, as they do a power of two apart (2 KB at 512 keys).
int padded(int n_keys) {
  return (n_keys + 15) / 16 * 16 + 16;
}

// kt[D, ld] = the keys of a kv head (kv_stride apart) transposed: the score products read a
// row of Kᵀ as vectors.
void transpose_keys(float* kt, int ld, const float* k, int kv_stride, int n_keys, int D) {
  for (int d = 0; d < D; ++d)
    for (int j = 0; j < n_keys; ++j)
      kt[static_cast<long>(d) * ld + j] = k[static_cast<long>(j) * kv_stride + d];
}

// scores[rows, n_keys] (rows padded(n_keys) apart) = scale · Q·Kᵀ for a block of query rows
// (q_stride apart) against the block's keys kt (columns of Kᵀ, ld_kt apart), written up to
// each row's last key, which is the row's index + last_key.
void block_scores(float* scores, const float* q, long q_stride, const float* kt, int ld_kt,
                  int rows, int n_keys, int D, float scale, int last_key) {
  BandProduct p{rows, n_keys, D, scale, q, q_stride, 1, kt, ld_kt, scores, padded(n_keys)};
  p.n_to = last_key;
  band_product(p);
}

// c[rows, D] = alpha · a·b for a block's rows a[rows, n_keys] (lda apart) and its keys'
// b[n_keys, D] (ldb apart), row i summing the keys i + from .. i + to only.
void rows_times_keys(float* c, long ldc, const float* a, int lda, const float* b, long ldb,
                     int rows, int n_keys, int D, float alpha, int from, int to) {
  BandProduct p{rows, D, n_keys, alpha, a, lda, 1, b, ldb, c, ldc};
  p.k_from = from, p.k_to = to;
  band_product(p);
}

// c[n_keys, D] += alpha · aᵀ·b for a block's a[rows, n_keys] (lda apart) and b[rows, D] (ldb
// apart), key j summing the rows j + from .. j + to only.
void keys_times_rows(float* c, long ldc, const float* a, int lda, const float* b, long ldb,
                     int rows, int n_keys, int D, float alpha, int from, int to) {
  BandProduct p{n_keys, D, rows, alpha, a, 1, lda, b, ldb, c, ldc, true};
  p.k_from = from, p.k_to = to;
  band_product(p);
}

// row[first, end) = softmax of itself, the rest of row[0, n) = 0; returns the log-sum-exp.
inline float softmax_row(float* row, int first, int end, int n) {
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

// The softmax backward of a row of a block: p[first, end) = exp(p − lse) from the scores, and
// dp = dS = P ∘ (dP − dot) in place of dP (P stays, as dV needs it); both zero elsewhere in
// [0, n).
inline void softmax_backward_row(float* p, float* dp, int first, int end, int n, float lse,
                                 float dot) {
#pragma omp simd
  for (int j = first; j < end; ++j) {
    p[j] = fast_exp(p[j] - lse);
    dp[j] = p[j] * (dp[j] - dot);
  }
  for (float* row : {p, dp}) {
    std::fill(row, row + first, 0.0f);
    std::fill(row + end, row + n, 0.0f);
  }
}

// Both compiled twice, as their loops vectorize: for AVX-512 (the exp's 16 lanes take 0.37
// against 0.65 ns a value, Xeon model 207) and for the baseline, taken as the CPU has.
__attribute__((target("avx512f"), flatten)) float softmax_avx512(float* row, int first, int end,
                                                                 int n) {
  return softmax_row(row, first, end, n);
}
__attribute__((flatten)) float softmax_avx2(float* row, int first, int end, int n) {
  return softmax_row(row, first, end, n);
}
__attribute__((target("avx512f"), flatten)) void softmax_backward_avx512(float* p, float* dp,
                                                                         int first, int end, int n,
                                                                         float lse, float dot) {
  softmax_backward_row(p, dp, first, end, n, lse, dot);
}
__attribute__((flatten)) void softmax_backward_avx2(float* p, float* dp, int first, int end, int n,
                                                    float lse, float dot) {
  softmax_backward_row(p, dp, first, end, n, lse, dot);
}

float causal_softmax(float* row, int first, int end, int n) {
  static const bool avx512 = cpu_features().avx512();
  return (avx512 ? softmax_avx512 : softmax_avx2)(row, first, end, n);
}

void causal_softmax_backward(float* p, float* dp, int first, int end, int n, float lse, float dot) {
  static const bool avx512 = cpu_features().avx512();
  (avx512 ? softmax_backward_avx512 : softmax_backward_avx2)(p, dp, first, end, n, lse, dot);
}

// The first key that row i of a block sees is key i + keys_from(last, window) (block
// coordinates, row i's last key being i + last): all keys before it without a window.
int keys_from(int last, int window) {
  return window > 0 ? last - window + 1 : -kAll;
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
      row_sgemm(true, keys, D, scale, q + i * D, k + static_cast<long>(j0) * kv_stride, kv_stride,
                0.0f, scores + static_cast<long>(i) * n_keys + j0);
  }
  for (int i = 0; i < group; ++i) {
    const float l = causal_softmax(scores + static_cast<long>(i) * n_keys, 0, n_keys, n_keys);
    if (lse) lse[i] = l;
  }
  // out = Σ_blocks P_block · V_block, each block's sum added to the last.
  for (int j0 = 0; j0 < n_keys; j0 += kKeyBlock) {
    const int keys = std::min(kKeyBlock, n_keys - j0);
    for (int i = 0; i < group; ++i)
      row_sgemm(false, D, keys, 1.0f, scores + static_cast<long>(i) * n_keys + j0,
                v + static_cast<long>(j0) * kv_stride, kv_stride, j0 > 0 ? 1.0f : 0.0f,
                out + i * D);
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const AttentionSpan* spans,
                       int n_spans, int H, int Hkv, int D, int kv_stride, int window) {
  const StepClock clock(StepWork::kAttention);
  const int group = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const long q_stride = static_cast<long>(H) * D;
  // Kᵀ of every kv head of the spans of more than one query, from the first key (the spans of
  // one query, decode, read K as it is): the calling thread's buffers, which the team reads
  // through the pointers.
  thread_local std::vector<long> kt_offsets;
  thread_local std::vector<float> kt_buffer;
  kt_offsets.resize(n_spans);
  long kt_size = 0;
  for (int s = 0; s < n_spans; ++s) {
    kt_offsets[s] = kt_size;
    if (spans[s].q_len > 1)
      kt_size += static_cast<long>(Hkv) * D * padded(spans[s].past + spans[s].q_len);
  }
  if (kt_buffer.size() < static_cast<size_t>(kt_size)) kt_buffer.resize(kt_size);
  float* const kt = kt_buffer.data();
  const long* const kt_at = kt_offsets.data();
  // One task per (sequence, block of query rows, head): scores = Q·Kᵀ over the keys the block
  // can see, causal softmax, P·V. A sequence of one query (decode) is one task per kv head
  // instead (single_query_group): chosen by the sequence's own length, so that it attends the
  // same way in any batch. The task grid is rectangular (every sequence gets the longest
  // one's blocks; the blocks a sequence lacks are skipped) so that the decode loop allocates
  // nothing here.
  int max_len = 0;
  for (int s = 0; s < n_spans; ++s) max_len = std::max(max_len, spans[s].q_len);
  const int n_blocks = (max_len + kRowBlock - 1) / kRowBlock;
#pragma omp parallel
  {
    thread_local std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic)
    for (int s = 0; s < n_spans; ++s)
      for (int g = 0; g < Hkv; ++g) {
        const AttentionSpan& sp = spans[s];
        if (sp.q_len == 1) continue;
        const int n = sp.past + sp.q_len, ld = padded(n);
        transpose_keys(kt + kt_at[s] + static_cast<long>(g) * D * ld, ld, sp.k + g * D, kv_stride,
                       n, D);
      }
#pragma omp for collapse(3) schedule(dynamic) nowait
    for (int s = 0; s < n_spans; ++s)
      for (int b = 0; b < n_blocks; ++b)
        for (int h = 0; h < H; ++h) {
          const AttentionSpan& sp = spans[s];
          const int i0 = b * kRowBlock;
          if (i0 >= sp.q_len || sp.q_len == 1) continue;
          const int rows = std::min(kRowBlock, sp.q_len - i0);
          // The block sees keys lo..lo+n_keys−1: from its first row's first key to its last
          // row; row i sees up to key i + last (block coordinates).
          const int lo = first_key(sp.past + i0, window);
          const int n_keys = sp.past + i0 + rows - lo, last = sp.past + i0 - lo;
          const int g = h / group, ld = padded(sp.past + sp.q_len), ldp = padded(n_keys);
          const long q_row = static_cast<long>(sp.q_start) + i0;
          scores.resize(static_cast<size_t>(rows) * ldp);
          block_scores(scores.data(), q + q_row * q_stride + h * D, q_stride,
                       kt + kt_at[s] + static_cast<long>(g) * D * ld + lo, ld, rows, n_keys, D,
                       scale, last);
          for (int i = 0; i < rows; ++i) {
            const int position = sp.past + i0 + i;
            const float l =
                causal_softmax(scores.data() + static_cast<long>(i) * ldp,
                               first_key(position, window) - lo, position + 1 - lo, n_keys);
            if (lse) lse[(q_row + i) * H + h] = l;
          }
          rows_times_keys(out + q_row * q_stride + h * D, q_stride, scores.data(), ldp,
                          sp.v + static_cast<long>(lo) * kv_stride + g * D, kv_stride, rows, n_keys,
                          D, 1.0f, keys_from(last, window), last);
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
  const StepClock clock(StepWork::kAttention);
  const int group = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const long q_stride = static_cast<long>(H) * D;
  const int kv_stride = Hkv * D;
  // The softmax backward's row terms Σ_d dO·O, one per (query, head), in a pass of its own:
  // it streams dO and O in order, where the tasks below would wait on each row of O.
  long n_rows = 0;
  for (int s = 0; s < n_spans; ++s)
    n_rows = std::max(n_rows, static_cast<long>(spans[s].q_start) + spans[s].q_len);
  thread_local std::vector<float> row_terms;  // the calling thread's, read by the team
  if (row_terms.size() < static_cast<size_t>(n_rows * H)) row_terms.resize(n_rows * H);
  float* const delta = row_terms.data();
  // One task per (sequence, kv head): the query heads of a group all add into the same dk/dv
  // columns, so they run in one task. Inside, blocks of query rows see only their keys.
#pragma omp parallel
  {
    thread_local std::vector<float> p, dp, kt, vt;
#pragma omp for schedule(static)
    for (long r = 0; r < n_rows * H; ++r) {
      const float* a = dout + r * D;
      const float* b = out + r * D;
      float dot = 0.0f;
      for (int d = 0; d < D; ++d) dot += a[d] * b[d];
      delta[r] = dot;
    }
#pragma omp for collapse(2) schedule(dynamic)
    for (int s = 0; s < n_spans; ++s)
      for (int g = 0; g < Hkv; ++g) {
        const int T = spans[s].q_len, start = spans[s].q_start;
        if (T == 0) continue;
        for (int t = 0; t < T; ++t) {
          std::fill_n(dk + (static_cast<long>(start) + t) * kv_stride + g * D, D, 0.0f);
          std::fill_n(dv + (static_cast<long>(start) + t) * kv_stride + g * D, D, 0.0f);
        }
        const int ld = padded(T);
        p.resize(static_cast<size_t>(std::min(T, kRowBlock)) * ld);
        dp.resize(p.size());
        kt.resize(static_cast<size_t>(D) * ld);
        vt.resize(kt.size());
        const long kv_start = static_cast<long>(start) * kv_stride + g * D;
        transpose_keys(kt.data(), ld, k + kv_start, kv_stride, T, D);
        transpose_keys(vt.data(), ld, v + kv_start, kv_stride, T, D);
        for (int h = g * group; h < (g + 1) * group; ++h)
          for (int i0 = 0; i0 < T; i0 += kRowBlock) {
            // The block's keys lo..lo+n_keys−1, as in the forward: row i sees up to key
            // i + last, and key j is seen from row j − last.
            const int rows = std::min(kRowBlock, T - i0), lo = first_key(i0, window);
            const int n_keys = i0 + rows - lo, last = i0 - lo, ldp = padded(n_keys);
            const long kv_off = kv_start + static_cast<long>(lo) * kv_stride;
            const long off = (static_cast<long>(start) + i0) * q_stride + h * D;
            // P = exp(scale·Q·Kᵀ − lse) and dP = dO·Vᵀ over the visible keys.
            block_scores(p.data(), q + off, q_stride, kt.data() + lo, ld, rows, n_keys, D, scale,
                         last);
            block_scores(dp.data(), dout + off, q_stride, vt.data() + lo, ld, rows, n_keys, D, 1.0f,
                         last);
            for (int i = 0; i < rows; ++i) {
              const long row = static_cast<long>(start) + i0 + i;
              causal_softmax_backward(p.data() + i * ldp, dp.data() + i * ldp,
                                      first_key(i0 + i, window) - lo, i0 + i + 1 - lo, n_keys,
                                      lse[row * H + h], delta[row * H + h]);
            }
            // dV += Pᵀ·dO; dQ = scale·dS·K; dK += scale·dSᵀ·Q
            const int seen_from = -last, seen_to = window > 0 ? window - 1 - last : kAll;
            keys_times_rows(dv + kv_off, kv_stride, p.data(), ldp, dout + off, q_stride, rows,
                            n_keys, D, 1.0f, seen_from, seen_to);
            rows_times_keys(dq + off, q_stride, dp.data(), ldp, k + kv_off, kv_stride, rows, n_keys,
                            D, scale, keys_from(last, window), last);
            keys_times_rows(dk + kv_off, kv_stride, dp.data(), ldp, q + off, q_stride, rows, n_keys,
                            D, scale, seen_from, seen_to);
          }
      }
  }
}

}  // namespace loratune::ops
