#include "ops/cpu/attention_products.h"

// GCC 12's AVX-512 intrinsics pass an undefined vector as the masked-off source, which its
// -Wmaybe-uninitialized and -Wuninitialized report once they are inlined (GCC bug 105593).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>

#include "core/cpu_features.h"

namespace loratune::ops {

namespace {

// The vector operations of the tiles, one struct per instruction set: a tile of kRows rows
// and kVectors vectors keeps its accumulators, a row of B and the broadcast value of A in the
// CPU's 32 (AVX-512: 6 × 4) or 16 (AVX2: 6 × 2) vector registers, the fastest shapes measured
// (docs/performance.md, "Attention's own products").

// Everything up to the matching pop is compiled for AVX-512 (the build's baseline is AVX2).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f")
#endif
namespace avx512 {
struct Isa {
  static constexpr int kWidth = 16, kRows = 6, kVectors = 4;
  using V = __m512;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float s) { return _mm512_set1_ps(s); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_first(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store_first(float* p, V v, int n) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
};
#include "ops/cpu/attention_tiles.inc"
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace avx2 {
struct Isa {
  static constexpr int kWidth = 8, kRows = 6, kVectors = 2;
  using V = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float s) { return _mm256_set1_ps(s); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256i first(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load_first(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store_first(float* p, V v, int n) { _mm256_maskstore_ps(p, first(n), v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
};
#include "ops/cpu/attention_tiles.inc"
}  // namespace avx2

}  // namespace

void band_product(const BandProduct& p) {
  static const bool avx512 = cpu_features().avx512();
  if (avx512)
    avx512::run_tiles(p);
  else
    avx2::run_tiles(p);
}

}  // namespace loratune::ops
