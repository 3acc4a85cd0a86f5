// The LoRA branches. Their products with A read the input through its dropout mask (no
// dropped-out copy of the input, nor of its gradient): a row at a time through row_sgemm, the
// row masked in the thread's buffer, and dA's sum over the rows in own AVX2 loops. The products
// with B go through sgemm.
#include <immintrin.h>

#include <vector>

#include "core/threads.h"
#include "ops/cpu/small_gemm.h"
#include "ops/ops.h"

namespace loratune::ops {

namespace {

constexpr int kWidth = 8;  // floats in an AVX2 vector

// Rows (or vectors of features) below which a loop runs on the calling thread.
constexpr long kMinParallel = 16;

// v = features i..i+7 of a row (i a multiple of 8), each times its keep factor where kMasked.
template <bool kMasked>
inline __m256 keep_vector(__m256 v, const uint64_t* row_bits, int i, __m256 scale) {
  if constexpr (!kMasked) return v;
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const int byte = static_cast<int>((row_bits[i / 64] >> (i % 64)) & 0xff);
  const __m256i on = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(byte), lane), lane);
  return _mm256_and_ps(_mm256_castsi256_ps(on), _mm256_mul_ps(v, scale));
}

template <bool kMasked>
inline float keep_value(float v, const uint64_t* row_bits, int i, float scale) {
  return kMasked ? v * kept_factor(row_bits, i, scale) : v;
}

// dst[0, in) = keep(src), or += with kAdd, for one row's mask bits.
template <bool kAdd>
void apply_keep(float* dst, const float* src, const uint64_t* row_bits, float scale, int in) {
  const __m256 s = _mm256_set1_ps(scale);
  int i = 0;
  for (; i + kWidth <= in; i += kWidth) {
    __m256 v = keep_vector<true>(_mm256_loadu_ps(src + i), row_bits, i, s);
    if constexpr (kAdd) v = _mm256_add_ps(_mm256_loadu_ps(dst + i), v);
    _mm256_storeu_ps(dst + i, v);
  }
  for (; i < in; ++i)
    dst[i] = (kAdd ? dst[i] : 0.0f) + keep_value<true>(src[i], row_bits, i, scale);
}

// The calling thread's buffer of one row of `in` floats.
float* row_buffer(int in) {
  thread_local std::vector<float> row;
  if (row.size() < static_cast<size_t>(in)) row.resize(in);
  return row.data();
}

// dA[k0..k0+G−1, i..i+7] += Σ_n du[n, k] · keep(x)[n, i..i+7], the rows summed in order.
template <bool kMasked, int G>
void grad_a_vector(float* dA, const float* du, const float* x, const KeepMask& keep, int N, int in,
                   int r, int k0, int i) {
  const __m256 s = _mm256_set1_ps(keep.scale);
  __m256 acc[G];
  for (int g = 0; g < G; ++g) acc[g] = _mm256_loadu_ps(dA + static_cast<long>(k0 + g) * in + i);
  for (long n = 0; n < N; ++n) {
    const __m256 xv = keep_vector<kMasked>(_mm256_loadu_ps(x + n * in + i), keep.row(n, in), i, s);
    for (int g = 0; g < G; ++g)
      acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(du[n * r + k0 + g]), xv, acc[g]);
  }
  for (int g = 0; g < G; ++g) _mm256_storeu_ps(dA + static_cast<long>(k0 + g) * in + i, acc[g]);
}

// dA[r, in] += duᵀ · keep(x): each thread owns whole vectors of features, so that no two add
// into the same dA; the features after the last whole vector one at a time.
template <bool kMasked>
void grad_a(float* dA, const float* du, const float* x, const KeepMask& keep, int N, int in,
            int r) {
  parallel_ranges(in / kWidth, kMinParallel, [&](long begin, long end) {
    for (long v = begin; v < end; ++v) {
      const int i = static_cast<int>(v) * kWidth;
      int k = 0;
      for (; k + 8 <= r; k += 8) grad_a_vector<kMasked, 8>(dA, du, x, keep, N, in, r, k, i);
      for (; k < r; ++k) grad_a_vector<kMasked, 1>(dA, du, x, keep, N, in, r, k, i);
    }
  });
  for (int i = in / kWidth * kWidth; i < in; ++i)
    for (int k = 0; k < r; ++k) {
      float sum = dA[k * in + i];
      for (long n = 0; n < N; ++n)
        sum += du[n * r + k] * keep_value<kMasked>(x[n * in + i], keep.row(n, in), i, keep.scale);
      dA[k * in + i] = sum;
    }
}

}  // namespace

void lora_forward(float* y, float* u, const float* x, const KeepMask& keep, const float* A,
                  const float* B, float scale, int N, int in, int out, int r) {
  // u = keep(x) · Aᵀ a row at a time, so that a row's values do not depend on the others.
  parallel_ranges(N, kMinParallel, [&](long begin, long end) {
    for (long n = begin; n < end; ++n) {
      const float* xr = x + n * in;
      if (keep.bits) {
        float* kept = row_buffer(in);
        apply_keep<false>(kept, xr, keep.row(n, in), keep.scale, in);
        xr = kept;
      }
      row_sgemm(true, r, in, 1.0f, xr, A, in, 0.0f, u + n * r);
    }
  });
  if (one_kernel_per_shape()) {
    // A row at a time through row_sgemm's loops: BLAS products round a row differently at some
    // row counts, and generation batches the rows of every sequence with the same adapter.
    parallel_ranges(N, 64, [&](long begin, long end) {
      for (long n = begin; n < end; ++n)
        row_sgemm(true, out, r, scale, u + n * r, B, r, 1.0f, y + n * out);
    });
    return;
  }
  sgemm(false, true, N, out, r, scale, u, r, B, r, 1.0f, y, out);
}

void lora_backward(float* dx, float* dA, float* dB, float* du, const float* dy, const float* u,
                   const float* x, const KeepMask& keep, const float* A, const float* B,
                   float scale, int N, int in, int out, int r) {
  sgemm(true, false, out, r, N, scale, dy, out, u, r, 1.0f, dB, r);
  sgemm(false, false, N, r, out, scale, dy, out, B, r, 0.0f, du, r);
  if (keep.bits)
    grad_a<true>(dA, du, x, keep, N, in, r);
  else
    grad_a<false>(dA, du, x, keep, N, in, r);
  if (!dx) return;
  // dx += keep(du · A), a row at a time.
  parallel_ranges(N, kMinParallel, [&](long begin, long end) {
    for (long n = begin; n < end; ++n) {
      float* dxr = dx + n * in;
      if (!keep.bits) {
        row_sgemm(false, in, r, 1.0f, du + n * r, A, in, 1.0f, dxr);
        continue;
      }
      float* product = row_buffer(in);
      row_sgemm(false, in, r, 1.0f, du + n * r, A, in, 0.0f, product);
      apply_keep<true>(dxr, product, keep.row(n, in), keep.scale, in);
    }
  });
}

void lora_merge(float* w, const float* A, const float* B, float scale, int in, int out, int r) {
  sgemm(false, false, out, in, r, scale, B, r, A, in, 1.0f, w, in);
}

}  // namespace loratune::ops
