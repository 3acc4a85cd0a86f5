#include "ops/cpu/bf16_groups_kernel.h"

// GCC 12's AVX-512 intrinsics pass an undefined vector as the masked-off source, which its
// -Wmaybe-uninitialized and -Wuninitialized report once they are inlined (GCC bug 105593).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <stdexcept>

#include "core/cpu_features.h"
#include "core/half.h"

namespace loratune::ops {

namespace {

constexpr int kGroupRows = PackedWeight::kGroupRows, kStep = PackedWeight::kGroupStep;
static_assert(kGroupRows == 16 && kStep == 32, "a step of a group row is one 64-byte vector");

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

// A tile is L ≤ 3 lanes of kHalf outputs: with kOneRow, lane l is row r0 times half l of the
// group (L = 2: the whole group); otherwise row r0 + l times half `half`. Each lane's kHalf
// accumulators are named registers: GCC 12 at -O3 kept an array of them in memory and stored
// all of them every step.
constexpr int kHalf = kGroupRows / 2;
#define ACC_LANE(l)                                                                              \
  __m512 c##l##0 = _mm512_setzero_ps(), c##l##1 = c##l##0, c##l##2 = c##l##0, c##l##3 = c##l##0, \
         c##l##4 = c##l##0, c##l##5 = c##l##0, c##l##6 = c##l##0, c##l##7 = c##l##0
// Output o of every lane: one weight vector feeds the lanes' rows (three with x0, x1, x2).
// Outputs outer, lanes inner: the lanes' 24 accumulators, 3 inputs and one weight take 28 of
// the 32 registers (lanes outer needed all 8 weights at once, and they were reloaded).
#define DOT_OUT(o)                                                                           \
  {                                                                                          \
    const __m512bh v = (__m512bh)_mm512_load_si512(w0 + (o)*kStep);                          \
    c0##o = _mm512_dpbf16_ps(c0##o, x0, v);                                                  \
    if constexpr (L > 1)                                                                     \
      c1##o = _mm512_dpbf16_ps(                                                              \
          c1##o, x1, kOneRow ? (__m512bh)_mm512_load_si512(w0 + (kHalf + (o)) * kStep) : v); \
    if constexpr (L > 2) c2##o = _mm512_dpbf16_ps(c2##o, x2, v);                             \
  }
#define SUM_LANE(l)                                                                        \
  if constexpr (L > (l)) {                                                                 \
    const float sums[kHalf] = {sum_lanes(c##l##0), sum_lanes(c##l##1), sum_lanes(c##l##2), \
                               sum_lanes(c##l##3), sum_lanes(c##l##4), sum_lanes(c##l##5), \
                               sum_lanes(c##l##6), sum_lanes(c##l##7)};                    \
    put(k, kOneRow ? r0 : r0 + (l), o0 + (kOneRow ? (l) : half) * kHalf, sums);            \
  }

// Lane outputs o0.. (those that exist) of row r into c.
inline void put(const Call& k, int r, int o0, const float* sums) {
  for (int o = 0; o < std::min(kHalf, k.out - o0); ++o) {
    const long at = static_cast<long>(r) * k.out + o0 + o;
    if (k.c_bf16)
      static_cast<uint16_t*>(k.c)[at] = float_to_bf16(sums[o]);
    else
      static_cast<float*>(k.c)[at] =
          k.accumulate ? static_cast<float*>(k.c)[at] + sums[o] : sums[o];
  }
}

// The tile's lanes of the group at wg, whose first output is o0. Every (row, output) is the
// same chain over the steps whatever the tile: its shape is free.
template <int L, bool kOneRow>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void tile(const Call& k,
                                                                          const uint16_t* wg,
                                                                          int r0, int o0,
                                                                          int half) {
  static_assert(L <= 3, "the macros name 3 lanes of 8 accumulators");
  const int steps = (k.K + kStep - 1) / kStep;
  // The weights are zero past K; the inputs there are masked off (they may be anything).
  const __mmask32 tail = k.K % kStep == 0 ? ~__mmask32{0} : (__mmask32{1} << (k.K % kStep)) - 1;
  const uint16_t* a = k.a + r0 * k.lda;
  ACC_LANE(0);
  ACC_LANE(1);
  ACC_LANE(2);
  for (int s = 0; s < steps; ++s) {
    const uint16_t* ws = wg + static_cast<long>(s) * kGroupRows * kStep;
    const __mmask32 m = s + 1 == steps ? tail : ~__mmask32{0};
#define INPUT(r) (__m512bh) _mm512_maskz_loadu_epi16(m, a + (r)*k.lda + s * kStep)
    const __m512bh x0 = INPUT(0), x1 = L > 1 && !kOneRow ? INPUT(1) : x0,
                   x2 = L > 2 ? INPUT(2) : x0;
#undef INPUT
    // Lane 0's outputs (with kOneRow lane 1's are the next kHalf).
    const uint16_t* w0 = ws + (kOneRow ? 0 : half) * kHalf * kStep;
    DOT_OUT(0);
    DOT_OUT(1);
    DOT_OUT(2);
    DOT_OUT(3);
    DOT_OUT(4);
    DOT_OUT(5);
    DOT_OUT(6);
    DOT_OUT(7);
  }
  SUM_LANE(0);
  SUM_LANE(1);
  SUM_LANE(2);
}

// Rows r0..r0+R−1 times the whole group, a half at a time (R ≥ 2).
template <int R>
void halves(const Call& k, const uint16_t* wg, int r0, int o0) {
  tile<R, false>(k, wg, r0, o0, 0);
  tile<R, false>(k, wg, r0, o0, 1);
}

// All N rows times the group at wg, whose first output is o0. The first pass reads the group
// from memory and leaves it in cache for the others.
void group(const Call& k, const uint16_t* wg, int o0, int N) {
  int r0 = 0;
  for (; r0 + 3 <= N; r0 += 3) halves<3>(k, wg, r0, o0);
  if (N - r0 == 2) halves<2>(k, wg, r0, o0);
  if (N - r0 == 1) tile<2, true>(k, wg, r0, o0, 0);
}

}  // namespace

bool bf16_groups_kernel_available() {
  const CpuFeatures& f = cpu_features();
  return f.avx512() && f.avx512_bf16;
}

void bf16_groups_forward(const GroupsProduct* ps, int n, const uint16_t* a, long lda, int N,
                         bool c_bf16) {
  if (n < 1 || n > kMaxGroupsProducts)
    throw std::invalid_argument("bf16_groups_forward takes 1 to 3 products");
  Call calls[kMaxGroupsProducts];
  int first[kMaxGroupsProducts + 1] = {0};  // product j's groups are [first[j], first[j + 1])
  long work = 0;
  for (int j = 0; j < n; ++j) {
    const PackedWeight& w = *ps[j].w;
    if (w.in() != ps[0].w->in()) throw std::invalid_argument("bf16_groups_forward: unequal inputs");
    calls[j] = {ps[j].c, c_bf16, a, lda, w.in(), w.out(), ps[j].accumulate};
    first[j + 1] = first[j] + w.groups();
    work += static_cast<long>(w.out()) * w.in();
  }
  if (N <= 0) return;
    // Groups outer, rows inner: each group's weights come from memory once. The team deals out
    // every product's groups together (q, k and v: one barrier, not three) in contiguous
    // ranges, each one stream that the hardware prefetcher follows (software prefetches 2 to
    // 16 KB ahead gained nothing on an AMD Zen 5). Guided: large ranges first, smaller ones at
    // the end, so that the threads finish together; under a static split the two threads
    // streamed at different speeds and the first to finish waited 7 % of the kernels' time
    // (decode 1.5-5 % faster guided, alternating per token in one process, on that Zen 5).
#pragma omp parallel for schedule(guided) if (work > 65536)
  for (int i = 0; i < first[n]; ++i) {
    int j = 0;
    while (i >= first[j + 1]) ++j;
    const int g = i - first[j];
    group(calls[j], ps[j].w->group(g), g * kGroupRows, N);
  }
}

}  // namespace loratune::ops
