#include "ops/cpu/small_gemm.h"

#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/error.h"
#include "ops/backend.h"

namespace loratune::ops {

namespace {

// A mask of the first n lanes (n ≤ 8).
__m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The sum of v's lanes as sums8 adds each of its eight: ((0+1)+(2+3)) + ((4+5)+(6+7)).
float sum8(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  const __m128 pairs_lo = _mm_hadd_ps(lo, lo), pairs_hi = _mm_hadd_ps(hi, hi);
  return _mm_cvtss_f32(
      _mm_add_ss(_mm_hadd_ps(pairs_lo, pairs_lo), _mm_hadd_ps(pairs_hi, pairs_hi)));
}

// The lane sums of a[0..7] in one vector.
__m256 sums8(const __m256 a[8]) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// c = alpha · sum (+ c when beta is 1).
inline void finish(float* c, float sum, float alpha, float beta) {
  *c = alpha * sum + (beta != 0.0f ? *c : 0.0f);
}

// acc[r] += a·b_r over K for R rows of b (ldb apart), one FMA chain each; the loop counts are
// constants, so that the accumulators stay in registers.
template <int R>
inline void dot_rows(__m256 acc[R], int K, const float* a, const float* b, long ldb) {
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 x = _mm256_loadu_ps(a + k);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + r * ldb + k), acc[r]);
  }
  if (k < K) {  // masked lanes load as zeros
    const __m256i m = first_lanes(K - k);
    const __m256 x = _mm256_maskload_ps(a + k, m);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_fmadd_ps(x, _mm256_maskload_ps(b + r * ldb + k, m), acc[r]);
  }
}

// c[j] = alpha · a·b_j (+ c[j] when beta is 1) for the N rows b_j of K values, ldb apart: eight
// rows at a time.
void row_times_rows(int N, int K, float alpha, const float* a, const float* b, int ldb, float beta,
                    float* c) {
  int j = 0;
  for (; j + 8 <= N; j += 8) {
    __m256 acc[8];
    for (__m256& v : acc) v = _mm256_setzero_ps();
    dot_rows<8>(acc, K, a, b + static_cast<long>(j) * ldb, ldb);
    float sums[8];
    _mm256_storeu_ps(sums, sums8(acc));
    for (int r = 0; r < 8; ++r) finish(c + j + r, sums[r], alpha, beta);
  }
  for (; j < N; ++j) {
    __m256 acc[1] = {_mm256_setzero_ps()};
    dot_rows<1>(acc, K, a, b + static_cast<long>(j) * ldb, ldb);
    finish(c + j, sum8(acc[0]), alpha, beta);
  }
}

// sums[0..8V) = Σ_k a[k] · b[k, 0..8V) over the K rows of b (ldb apart), the first `mask`
// lanes of the last vector only where kMasked.
template <int V, bool kMasked>
inline void axpy_rows(float* sums, int K, const float* a, const float* b, long ldb, __m256i mask) {
  __m256 acc[V];
  for (__m256& v : acc) v = _mm256_setzero_ps();
  for (int k = 0; k < K; ++k) {
    const __m256 s = _mm256_set1_ps(a[k]);
    const float* bk = b + k * ldb;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const __m256 x = kMasked && v == V - 1 ? _mm256_maskload_ps(bk + 8 * v, mask)
                                             : _mm256_loadu_ps(bk + 8 * v);
      acc[v] = _mm256_fmadd_ps(s, x, acc[v]);
    }
  }
  for (int v = 0; v < V; ++v) _mm256_storeu_ps(sums + 8 * v, acc[v]);
}

// c[0..N) = alpha · Σ_k a[k] · b[k, 0..N) (+ c when beta is 1): 64 columns at a time in
// registers, then 8 at a time.
void row_times_matrix(int N, int K, float alpha, const float* a, const float* b, int ldb,
                      float beta, float* c) {
  float sums[64];
  for (int j0 = 0; j0 < N; j0 += 64) {
    const int cols = std::min(64, N - j0);
    if (cols == 64) {
      axpy_rows<8, false>(sums, K, a, b + j0, ldb, __m256i{});
    } else {
      int v = 0;
      for (; 8 * v + 8 <= cols; ++v)
        axpy_rows<1, false>(sums + 8 * v, K, a, b + j0 + 8 * v, ldb, __m256i{});
      if (8 * v < cols)
        axpy_rows<1, true>(sums + 8 * v, K, a, b + j0 + 8 * v, ldb, first_lanes(cols - 8 * v));
    }
    for (int j = 0; j < cols; ++j) finish(c + j0 + j, sums[j], alpha, beta);
  }
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  cap_onednn_isa();
  const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha,
                                          A, lda, B, ldb, beta, C, ldc);
  if (status != dnnl_success)
    throw Error("oneDNN's sgemm failed (status " + std::to_string(status) + ")",
                std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K));
}

void row_sgemm(bool trans_b, int N, int K, float alpha, const float* a, const float* B, int ldb,
               float beta, float* c) {
  if (beta != 0.0f && beta != 1.0f) throw std::invalid_argument("row_sgemm: beta is 0 or 1");
  if (trans_b) return row_times_rows(N, K, alpha, a, B, ldb, beta, c);
  row_times_matrix(N, K, alpha, a, B, ldb, beta, c);
}

}  // namespace loratune::ops
