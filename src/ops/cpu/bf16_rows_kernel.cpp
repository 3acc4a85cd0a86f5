#include "ops/cpu/bf16_rows_kernel.h"

// GCC 12's AVX-512 intrinsics pass an undefined vector as the masked-off source, which its
// -Wmaybe-uninitialized and -Wuninitialized report once they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
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

// One row's kOutputs accumulators as named registers: GCC 12 at -O3 kept an array of them
// for 3 rows and more in memory, storing all of them every step (the 4-row tile then ran at a
// quarter of the vdpbf16ps peak).
#define ACC_ROW(r)                                                                               \
  __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0, \
         c##r##4 = c##r##0, c##r##5 = c##r##0
#define DOT_ROW(r)                                                                          \
  if constexpr (R > (r)) {                                                                  \
    const __m512bh x = (__m512bh)_mm512_maskz_loadu_epi16(m, a + (r)*k.lda + s * 32);       \
    c##r##0 = _mm512_dpbf16_ps(c##r##0, x, w0), c##r##1 = _mm512_dpbf16_ps(c##r##1, x, w1); \
    c##r##2 = _mm512_dpbf16_ps(c##r##2, x, w2), c##r##3 = _mm512_dpbf16_ps(c##r##3, x, w3); \
    c##r##4 = _mm512_dpbf16_ps(c##r##4, x, w4), c##r##5 = _mm512_dpbf16_ps(c##r##5, x, w5); \
  }
#define SUM_ROW(r)                                                                             \
  if constexpr (R > (r)) {                                                                     \
    const float sums[kOutputs] = {sum_lanes(c##r##0), sum_lanes(c##r##1), sum_lanes(c##r##2),  \
                                  sum_lanes(c##r##3), sum_lanes(c##r##4), sum_lanes(c##r##5)}; \
    put(k, r0 + (r), o0, sums);                                                                \
  }

// Row r's sums of outputs o0.. (those that exist) into c.
inline void put(const Call& k, int r, int o0, const float* sums) {
  for (int o = 0; o < std::min(kOutputs, k.out - o0); ++o) {
    const long at = static_cast<long>(r) * k.out + o0 + o;
    if (k.c_bf16)
      static_cast<uint16_t*>(k.c)[at] = float_to_bf16(sums[o]);
    else
      static_cast<float*>(k.c)[at] =
          k.accumulate ? static_cast<float*>(k.c)[at] + sums[o] : sums[o];
  }
}

// Rows r0..r0+R−1 (R ≤ 4) and outputs o0..o0+kOutputs−1 (those that exist). Every (row,
// output) is the same chain over the steps of 32 inputs whatever R: the tile's shape is free.
// With `prefetch`, the weights that many elements past this group's are fetched meanwhile.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void tile(const Call& k,
                                                                          const uint16_t* const* wo,
                                                                          int r0, int o0,
                                                                          long prefetch) {
  static_assert(kOutputs == 6 && R <= 4, "the macros name 4 rows of 6 accumulators");
  const int steps = (k.K + 31) / 32;
  const __mmask32 tail = k.K % 32 == 0 ? ~__mmask32{0} : (__mmask32{1} << (k.K % 32)) - 1;
  const uint16_t* a = k.a + r0 * k.lda;
  ACC_ROW(0);
  ACC_ROW(1);
  ACC_ROW(2);
  ACC_ROW(3);
  for (int s = 0; s < steps; ++s) {
    const __mmask32 m = s + 1 == steps ? tail : ~__mmask32{0};
    const __m512bh w0 = (__m512bh)_mm512_maskz_loadu_epi16(m, wo[0] + s * 32);
    const __m512bh w1 = (__m512bh)_mm512_maskz_loadu_epi16(m, wo[1] + s * 32);
    const __m512bh w2 = (__m512bh)_mm512_maskz_loadu_epi16(m, wo[2] + s * 32);
    const __m512bh w3 = (__m512bh)_mm512_maskz_loadu_epi16(m, wo[3] + s * 32);
    const __m512bh w4 = (__m512bh)_mm512_maskz_loadu_epi16(m, wo[4] + s * 32);
    const __m512bh w5 = (__m512bh)_mm512_maskz_loadu_epi16(m, wo[5] + s * 32);
    if (prefetch)
      for (int o = 0; o < kOutputs; ++o)
        _mm_prefetch(reinterpret_cast<const char*>(wo[o] + prefetch + s * 32), _MM_HINT_T0);
    DOT_ROW(0);
    DOT_ROW(1);
    DOT_ROW(2);
    DOT_ROW(3);
  }
  SUM_ROW(0);
  SUM_ROW(1);
  SUM_ROW(2);
  SUM_ROW(3);
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
    // The first tile of rows prefetches the next group's weights: the hardware prefetcher,
    // left alone with kOutputs short interleaved streams, kept decode at a quarter of the
    // bandwidth bound on an AMD Zen 5.
    long prefetch = g + 1 < groups ? static_cast<long>(kOutputs) * k.K : 0;
    int r0 = 0;
    for (; r0 + 4 <= N; r0 += 4, prefetch = 0) tile<4>(k, wo, r0, o0, prefetch);
    for (; r0 + 2 <= N; r0 += 2, prefetch = 0) tile<2>(k, wo, r0, o0, prefetch);
    if (r0 < N) tile<1>(k, wo, r0, o0, prefetch);
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
