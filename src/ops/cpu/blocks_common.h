// What loratune's own kernels on the blocks formats (blocks_forward.cpp, blocks_backward.cpp)
// share: the tile's shape, how a product's work is dealt out over the team, a register
// transpose and the tiles' row macros.
#pragma once

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "ops/packed_weight.h"

namespace loratune::ops::blocks {

constexpr int kW = PackedWeight::kWidth;  // outputs per weight block: two 8-float vectors
// Micro-tile: kRows rows × kW columns in 12 vector accumulators (of 16 registers).
constexpr int kRows = 6;
// The forward's reduction runs in slices of at most kMaxSlice input features (long slices
// beat L1-sized ones, 256, by about 10 %: every slice is another pass over y); the input
// gradient packs the dy of at most kMaxSlice outputs at once.
constexpr int kMaxSlice = 1024;
// The products' work is dealt out in chunks, about this many per thread, to whichever thread
// is free: a thread that the machine holds up does not keep the other waiting at the barrier.
constexpr int kChunksPerThread = 8;

// The calling thread's share [begin, end) of n items, split into contiguous ranges over the
// team of the enclosing parallel region.
struct Range {
  int begin, end;
};
inline Range thread_share(int n) {
  const long t = omp_get_thread_num(), nt = omp_get_num_threads();
  return {static_cast<int>(n * t / nt), static_cast<int>(n * (t + 1) / nt)};
}

// Deals items [0, n) out over the calling team as body(begin, end), to whichever thread is
// free: three quarters in chunks of about n / (threads · kChunksPerThread), the rest in
// chunks a quarter that size, so that the threads reach the closing barrier together (one
// whole chunk left to one thread kept the other waiting about 3 % of the time). Chunks are
// whole multiples of `granule` items where they can be (pairs of blocks for a wide tile).
template <typename Body>
void for_chunks(int n, int granule, Body&& body) {
  const auto round_up = [granule](int c) { return (c + granule - 1) / granule * granule; };
  const int cs = round_up(std::max(1, n / (omp_get_num_threads() * kChunksPerThread)));
  const int bulk_chunks = n * 3 / 4 / cs, bulk = bulk_chunks * cs;
  const int tail_cs = round_up(std::max(1, cs / 4));
  const int tail_chunks = (n - bulk + tail_cs - 1) / tail_cs;
#pragma omp for schedule(dynamic, 1) nowait
  for (int c = 0; c < bulk_chunks; ++c) body(c * cs, (c + 1) * cs);
#pragma omp for schedule(dynamic, 1)
  for (int c = 0; c < tail_chunks; ++c)
    body(bulk + c * tail_cs, std::min(n, bulk + (c + 1) * tail_cs));
}

// The first 32-byte aligned float of a buffer allocated 8 floats longer than it needs.
inline float* aligned32(float* p) {
  return p + (8 - reinterpret_cast<uintptr_t>(p) / sizeof(float) % 8) % 8;
}

// Transposes the 8 × 8 matrix whose rows are r[0..7], in place. Inlined, with named
// temporaries: through arrays, the compiler copied the result back with a memmove call.
inline __attribute__((always_inline)) void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  // s0..s3 hold columns 0,1,2,3 of rows 0-3 (low lane) and 4,5,6,7 (high lane); s4..s7 the
  // same of rows 4-7.
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// The rows of a 6 × 16 AVX2 tile with named accumulators c<row>0, c<row>1.
#define ADD_ROW(m)                                                \
  c##m##0 = _mm256_add_ps(c##m##0, _mm256_loadu_ps(y + (m)*ldy)); \
  c##m##1 = _mm256_add_ps(c##m##1, _mm256_loadu_ps(y + (m)*ldy + 8));
#define FMA_ROW(m, src)                        \
  {                                            \
    const __m256 a = _mm256_broadcast_ss(src); \
    c##m##0 = _mm256_fmadd_ps(a, b0, c##m##0); \
    c##m##1 = _mm256_fmadd_ps(a, b1, c##m##1); \
  }
#define STORE_ROW(m)                      \
  _mm256_storeu_ps(y + (m)*ldy, c##m##0); \
  _mm256_storeu_ps(y + (m)*ldy + 8, c##m##1);

}  // namespace loratune::ops::blocks
