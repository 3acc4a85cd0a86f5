#include "ops/cpu/bf16_rows_kernel.h"

// GCC 12's AVX-512 intrinsics pass an undefined vector as the masked-off source, which its
// -Wmaybe-uninitialized reports once they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>

#include "core/cpu_features.h"
#include "core/half.h"
#include "ops/cpu/amx_rows_kernel.h"

namespace loratune::ops {

namespace {

// A tile is R rows × kOutputs outputs: per step of 32 inputs, kOutputs weight loads feed
// R · kOutputs dot products. Outputs past the edge repeat the last one (their results are
// dropped), so that the loops keep constant bounds and registers.
constexpr int kOutputs = 6;

// The sum of v's 16 lanes, always in the same order.
__attribute__((target("avx512f"))) inline float sum_lanes(__m512 v) {
  const __m512 halves = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  const __m256 s8 = _mm512_castps512_ps256(halves);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s4, _mm_movehdup_ps(s4)));
}

struct Call {
  void* c;
  bool c_bf16;
  const uint16_t* a;
  long lda;
  int K, out;
  bool accumulate;
};

// Rows r0..r0+R−1 and outputs o0..o0+kOutputs−1 (those that exist). Every (row, output) is
// the same chain over the steps of 32 inputs whatever R: the tile's shape is free.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void tile(const Call& k,
                                                                          const uint16_t* const* wo,
                                                                          int r0, int o0) {
  const int steps = (k.K + 31) / 32;
  const __mmask32 tail = k.K % 32 == 0 ? ~__mmask32{0} : (__mmask32{1} << (k.K % 32)) - 1;
  __m512 acc[R][kOutputs];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < kOutputs; ++o) acc[r][o] = _mm512_setzero_ps();
  for (int s = 0; s < steps; ++s) {
    const __mmask32 m = s + 1 == steps ? tail : ~__mmask32{0};
    __m512bh wv[kOutputs];
    for (int o = 0; o < kOutputs; ++o)
      wv[o] = (__m512bh)_mm512_maskz_loadu_epi16(m, wo[o] + s * 32);
    for (int r = 0; r < R; ++r) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, k.a + (r0 + r) * k.lda + s * 32);
      for (int o = 0; o < kOutputs; ++o) acc[r][o] = _mm512_dpbf16_ps(acc[r][o], xv, wv[o]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < std::min(kOutputs, k.out - o0); ++o) {
      const float sum = sum_lanes(acc[r][o]);
      const long at = static_cast<long>(r0 + r) * k.out + o0 + o;
      if (k.c_bf16)
        static_cast<uint16_t*>(k.c)[at] = float_to_bf16(sum);
      else
        static_cast<float*>(k.c)[at] = k.accumulate ? static_cast<float*>(k.c)[at] + sum : sum;
    }
}

void kernel(const Call& k, const uint16_t* w, int N) {
  const int groups = (k.out + kOutputs - 1) / kOutputs;
  // Outputs outer, rows inner: each group's weight rows come from memory once.
#pragma omp parallel for schedule(static) if (static_cast <long>(k.out) * k.K > 65536)
  for (int g = 0; g < groups; ++g) {
    const int o0 = g * kOutputs;
    const uint16_t* wo[kOutputs];
    for (int o = 0; o < kOutputs; ++o)
      wo[o] = w + static_cast<long>(std::min(o0 + o, k.out - 1)) * k.K;
    int r0 = 0;
    for (; r0 + 4 <= N; r0 += 4) tile<4>(k, wo, r0, o0);
    for (; r0 + 2 <= N; r0 += 2) tile<2>(k, wo, r0, o0);
    if (r0 < N) tile<1>(k, wo, r0, o0);
  }
}

}  // namespace

bool bf16_rows_kernel_available() {
  const CpuFeatures& f = cpu_features();
  return f.avx512() && f.avx512_bf16;
}

void bf16_rows_forward(void* c, bool c_bf16, const uint16_t* a, long lda, const uint16_t* w, int N,
                       int K, int out, bool accumulate) {
  if (N > 0 && out > 0) kernel({c, c_bf16, a, lda, K, out, accumulate}, w, N);
}

const RowsKernelBF16& rows_kernel_bf16() {
  static const RowsKernelBF16 chosen =
      amx_rows_kernel_available()    ? RowsKernelBF16{"own-amx-bf16", amx_rows_forward}
      : bf16_rows_kernel_available() ? RowsKernelBF16{"own-avx512bf16", bf16_rows_forward}
                                     : RowsKernelBF16{nullptr, nullptr};
  return chosen;
}

}  // namespace loratune::ops
