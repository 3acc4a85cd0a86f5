#include "ops/cpu/attention_products.h"

// The AVX-512 tiles are templates over vector types that only the AVX-512 entry point (which
// inlines all of them) compiles with AVX-512: GCC warns of their ABI at instantiation.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12's AVX-512 intrinsics pass an undefined vector as the masked-off source, which its
// -Wmaybe-uninitialized and -Wuninitialized report once they are inlined (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>

#include "core/cpu_features.h"

namespace loratune::ops {

namespace {

// The vector operations of the tiles, one struct per instruction set: a tile of kRows rows
// and kVectors vectors keeps its accumulators, a row of B and the broadcast value of A in the
// CPU's 32 (AVX-512: 6 × 4) or 16 (AVX2: 6 × 2) vector registers, the fastest shapes measured
// (docs/performance.md, "Attention's own products").
#define LORATUNE_AVX512 __attribute__((target("avx512f")))
struct Avx512 {
  static constexpr int kWidth = 16, kRows = 6, kVectors = 4;
  using V = __m512;
  LORATUNE_AVX512 static V zero() { return _mm512_setzero_ps(); }
  LORATUNE_AVX512 static V set1(float s) { return _mm512_set1_ps(s); }
  LORATUNE_AVX512 static V load(const float* p) { return _mm512_loadu_ps(p); }
  LORATUNE_AVX512 static V load_first(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
  LORATUNE_AVX512 static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  LORATUNE_AVX512 static void store_first(float* p, V v, int n) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
  LORATUNE_AVX512 static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  LORATUNE_AVX512 static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
};
#undef LORATUNE_AVX512

struct Avx2 {
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

// Rows i0..i0+R−1 of C, columns j0.. (NV vectors, the last one `tail` lanes when kTail),
// summed over k in [k0, k1). kAT: A is stored transposed (a_row = 1), so a tile's R values of
// a k are adjacent; else each row has its own pointer. Either way the loop's addresses are a
// register plus a constant or an index, and no register spills.
template <class I, int R, int NV, bool kTail, bool kAT>
inline void tile(const BandProduct& p, int i0, int j0, int k0, int k1, int tail) {
  using V = typename I::V;
  constexpr int W = I::kWidth;
  V acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = I::zero();
  const float* a = p.a + static_cast<long>(i0) * p.a_row;
  const float* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = a + r * p.a_row;
  const float* bk = p.b + j0 + static_cast<long>(k0) * p.ldb;
  const float* ak = a + static_cast<long>(k0) * p.a_col;
  for (int k = k0; k < k1; ++k, bk += p.ldb, ak += p.a_col) {
    V bv[NV];
    for (int v = 0; v < NV; ++v)
      bv[v] = kTail && v == NV - 1 ? I::load_first(bk + v * W, tail) : I::load(bk + v * W);
    for (int r = 0; r < R; ++r) {
      const V s = I::set1(kAT ? ak[r] : rows[r][k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = I::fma(s, bv[v], acc[r][v]);
    }
  }
  const V alpha = I::set1(p.alpha);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* c = p.c + static_cast<long>(i0 + r) * p.ldc + j0 + v * W;
      const bool last = kTail && v == NV - 1;
      const V old = !p.accumulate ? I::zero() : last ? I::load_first(c, tail) : I::load(c);
      const V x = p.accumulate ? I::fma(alpha, acc[r][v], old) : I::mul(alpha, acc[r][v]);
      if (last)
        I::store_first(c, x, tail);
      else
        I::store(c, x);
    }
}

// Columns j0..j0+cols−1 of R rows: whole tiles of kVectors vectors, else a vector at a time.
template <class I, int R, bool kAT>
inline void tile_columns(const BandProduct& p, int i0, int j0, int cols, int k0, int k1) {
  constexpr int W = I::kWidth;
  if (cols == I::kVectors * W) return tile<I, R, I::kVectors, false, kAT>(p, i0, j0, k0, k1, 0);
  for (int j = j0; j < j0 + cols; j += W) {
    const int n = std::min(W, j0 + cols - j);
    if (n == W)
      tile<I, R, 1, false, kAT>(p, i0, j, k0, k1, 0);
    else
      tile<I, R, 1, true, kAT>(p, i0, j, k0, k1, n);
  }
}

// The tile code of `rows` ≤ R rows.
template <class I, int R, bool kAT>
inline void tile_rows(const BandProduct& p, int rows, int i0, int j0, int cols, int k0, int k1) {
  if constexpr (R > 1)
    if (rows < R) return tile_rows<I, R - 1, kAT>(p, rows, i0, j0, cols, k0, k1);
  tile_columns<I, R, kAT>(p, i0, j0, cols, k0, k1);
}

// Blocks of columns, then of k outside, tiles of rows inside, so that a block of B (kDepth
// rows of kVectors vectors: 16 KB at AVX-512) stays in L1 while the rows pass. A tile adds
// each block of k after its first to C.
constexpr int kDepth = 64;

template <class I, bool kAT>
inline void run(const BandProduct& p) {
  constexpr int W = I::kWidth, kBlock = I::kVectors * W;
  for (int j0 = 0; j0 < p.N; j0 += kBlock)
    for (int d0 = 0; d0 < std::max(p.K, 1); d0 += kDepth)
      for (int i0 = 0; i0 < p.M; i0 += I::kRows) {
        const int rows = std::min(I::kRows, p.M - i0), i1 = i0 + rows - 1;
        const int visible = std::min(p.N, i1 + p.n_to + 1) - j0;  // columns this tile writes
        if (visible <= 0) continue;
        const int cols = std::min({kBlock, p.N - j0, (visible + W - 1) / W * W});
        // The tile's k, then their share in this block; a tile of no k writes its zeros here.
        const int k0 = std::max(0, i0 + p.k_from),
                  k1 = std::max(k0, std::min(p.K, i1 + p.k_to + 1));
        const int from = std::max(k0, d0), to = std::min(k1, d0 + kDepth);
        if (from >= to && !(k0 == k1 && d0 == 0)) continue;
        BandProduct piece = p;
        piece.accumulate = p.accumulate || from > k0;
        tile_rows<I, I::kRows, kAT>(piece, rows, i0, j0, cols, from, std::max(from, to));
      }
}

__attribute__((target("avx512f"), flatten)) void run_avx512(const BandProduct& p) {
  if (p.a_row == 1)
    run<Avx512, true>(p);
  else
    run<Avx512, false>(p);
}

__attribute__((flatten)) void run_avx2(const BandProduct& p) {
  if (p.a_row == 1)
    run<Avx2, true>(p);
  else
    run<Avx2, false>(p);
}

}  // namespace

void band_product(const BandProduct& p) {
  static const bool avx512 = cpu_features().avx512();
  if (avx512)
    run_avx512(p);
  else
    run_avx2(p);
}

}  // namespace loratune::ops
