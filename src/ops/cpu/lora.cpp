// The LoRA branches: their thin products with A (r rows of `in` features) in own AVX2 loops
// that apply the input's dropout mask as they go (no dropped-out copy of the input, nor of its
// gradient), the products with B through sgemm.
#include <immintrin.h>

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

inline float sum_lanes(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

// u[g] = keep(x) · A[g] for G rows of A (`in` apart): G independent vector sums.
template <bool kMasked, int G>
void row_times_a(float* u, const float* x, const uint64_t* row_bits, float scale, const float* A,
                 int in) {
  const __m256 s = _mm256_set1_ps(scale);
  __m256 acc[G];
  for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_ps();
  int i = 0;
  for (; i + kWidth <= in; i += kWidth) {
    const __m256 xv = keep_vector<kMasked>(_mm256_loadu_ps(x + i), row_bits, i, s);
    for (int g = 0; g < G; ++g)
      acc[g] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(A + static_cast<long>(g) * in + i), acc[g]);
  }
  for (int g = 0; g < G; ++g) {
    float sum = sum_lanes(acc[g]);
    for (int j = i; j < in; ++j)
      sum += keep_value<kMasked>(x[j], row_bits, j, scale) * A[g * in + j];
    u[g] = sum;
  }
}

// u[N, r] = keep(x) · Aᵀ a row at a time (a row's values do not depend on the others), eight
// rows of A at a time.
template <bool kMasked>
void rows_times_a(float* u, const float* x, const KeepMask& keep, const float* A, int N, int in,
                  int r) {
  const int words = lora_keep_words(in);
  parallel_ranges(N, kMinParallel, [&](long begin, long end) {
    for (long n = begin; n < end; ++n) {
      const float* xr = x + n * in;
      const uint64_t* bits = kMasked ? keep.bits + n * words : nullptr;
      int k = 0;
      for (; k + 8 <= r; k += 8)
        row_times_a<kMasked, 8>(u + n * r + k, xr, bits, keep.scale, A + static_cast<long>(k) * in,
                                in);
      for (; k < r; ++k)
        row_times_a<kMasked, 1>(u + n * r + k, xr, bits, keep.scale, A + static_cast<long>(k) * in,
                                in);
    }
  });
}

// dA[k0..k0+G−1, i..i+7] += Σ_n du[n, k] · keep(x)[n, i..i+7], the rows summed in order.
template <bool kMasked, int G>
void grad_a_vector(float* dA, const float* du, const float* x, const KeepMask& keep, int N, int in,
                   int r, int k0, int i) {
  const int words = lora_keep_words(in);
  const __m256 s = _mm256_set1_ps(keep.scale);
  __m256 acc[G];
  for (int g = 0; g < G; ++g) acc[g] = _mm256_loadu_ps(dA + static_cast<long>(k0 + g) * in + i);
  for (long n = 0; n < N; ++n) {
    const uint64_t* bits = kMasked ? keep.bits + n * words : nullptr;
    const __m256 xv = keep_vector<kMasked>(_mm256_loadu_ps(x + n * in + i), bits, i, s);
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
  const int words = lora_keep_words(in);
  for (int i = in / kWidth * kWidth; i < in; ++i)
    for (int k = 0; k < r; ++k) {
      float sum = dA[k * in + i];
      for (long n = 0; n < N; ++n) {
        const uint64_t* bits = kMasked ? keep.bits + n * words : nullptr;
        sum += du[n * r + k] * keep_value<kMasked>(x[n * in + i], bits, i, keep.scale);
      }
      dA[k * in + i] = sum;
    }
}

// dx[N, in] += keep(du · A): four vectors of a row at a time, each summing the r rows of A.
template <bool kMasked>
void grad_x(float* dx, const float* du, const KeepMask& keep, const float* A, int N, int in,
            int r) {
  constexpr int kVectors = 4;
  const int words = lora_keep_words(in);
  parallel_ranges(N, kMinParallel, [&](long begin, long end) {
    const __m256 s = _mm256_set1_ps(keep.scale);
    for (long n = begin; n < end; ++n) {
      float* dxr = dx + n * in;
      const float* dur = du + n * r;
      const uint64_t* bits = kMasked ? keep.bits + n * words : nullptr;
      int i = 0;
      for (; i + kVectors * kWidth <= in; i += kVectors * kWidth) {
        __m256 acc[kVectors];
        for (int v = 0; v < kVectors; ++v) acc[v] = _mm256_setzero_ps();
        for (int k = 0; k < r; ++k) {
          const __m256 d = _mm256_set1_ps(dur[k]);
          const float* a = A + static_cast<long>(k) * in + i;
          for (int v = 0; v < kVectors; ++v)
            acc[v] = _mm256_fmadd_ps(d, _mm256_loadu_ps(a + v * kWidth), acc[v]);
        }
        for (int v = 0; v < kVectors; ++v) {
          float* out = dxr + i + v * kWidth;
          const __m256 t = keep_vector<kMasked>(acc[v], bits, i + v * kWidth, s);
          _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), t));
        }
      }
      for (; i < in; ++i) {
        float sum = 0.0f;
        for (int k = 0; k < r; ++k) sum += dur[k] * A[k * in + i];
        dxr[i] += keep_value<kMasked>(sum, bits, i, keep.scale);
      }
    }
  });
}

}  // namespace

void lora_forward(float* y, float* u, const float* x, const KeepMask& keep, const float* A,
                  const float* B, float scale, int N, int in, int out, int r) {
  if (keep.bits)
    rows_times_a<true>(u, x, keep, A, N, in, r);
  else
    rows_times_a<false>(u, x, keep, A, N, in, r);
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
  if (keep.bits) {
    grad_a<true>(dA, du, x, keep, N, in, r);
    if (dx) grad_x<true>(dx, du, keep, A, N, in, r);
  } else {
    grad_a<false>(dA, du, x, keep, N, in, r);
    if (dx) grad_x<false>(dx, du, keep, A, N, in, r);
  }
}

void lora_merge(float* w, const float* A, const float* B, float scale, int in, int out, int r) {
  sgemm(false, false, out, in, r, scale, B, r, A, in, 1.0f, w, in);
}

}  // namespace loratune::ops
