#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "core/cpu_features.h"
#include "core/threads.h"
#include "ops/cpu/bf16_groups_kernel.h"
#include "ops/cpu/bf16_round.h"
#include "ops/cpu/onednn_matmul.h"
#include "ops/cpu/small_gemm.h"
#include "ops/ops.h"

namespace loratune::ops {

namespace {

constexpr int kW = PackedWeight::kWidth;  // outputs per weight block: two 8-float vectors
// Micro-tile: kRows rows × kW columns in 12 vector accumulators (of 16 registers).
constexpr int kRows = 6;
// Forward: the reduction runs in slices of at most kMaxSlice input features over token blocks
// of at most kTokenBlock rows (a multiple of kRows; the blocks of a product are of equal size),
// the rows packed so that each tile broadcasts from one contiguous stream. Long slices beat
// L1-sized ones (256) by about 10 %: every slice is another pass over y.
constexpr int kMaxSlice = 1024;
constexpr int kTokenBlock = 264;
// Input gradient: dy is packed (transposed, kW tokens per panel) all outputs at once when
// there are at most kMaxSlice (one pass over dxᵀ), else kOutSlice at a time (the lm_head's
// packed dy then stays in L2); kPanelGroup token panels (512 tokens) are walked per input
// tile while its weights sit in L1 (smaller groups re-read down_proj's weight slice from
// memory once per group).
constexpr int kOutSlice = 256;
constexpr int kPanelGroup = 32;
// The products' work is dealt out in chunks, about this many per thread, to whichever thread
// is free: a thread that the machine holds up does not keep the other waiting at the barrier.
constexpr int kChunksPerThread = 8;
// Below this many rows a product is a few matrix-vector products: memory-bound.
constexpr int kGemvRows = 4;  // gemv() takes 1 to 3 rows
// The most products one forward call takes (q, k and v).
constexpr int kMaxProducts = 3;

// The calling thread's share [begin, end) of n items, split into contiguous ranges over the
// team of the enclosing parallel region.
struct Range {
  int begin, end;
};
Range thread_share(int n) {
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
float* aligned32(float* p) {
  return p + (8 - reinterpret_cast<uintptr_t>(p) / sizeof(float) % 8) % 8;
}

// A block row's kW weights as two vectors of 8 floats (outputs 0-7, 8-15). kBlocksBF16Widened
// holds them as bf16 in PackedWeight::widened_slot order (0-3, 8-11, 4-7, 12-15): interleaved
// with zeros, each 128-bit half's first and then last four values land in order in the top
// halves of 32-bit lanes, which is the bf16 value's fp32.
inline __attribute__((always_inline)) void load_block_row(const float* p, __m256& b0, __m256& b1) {
  b0 = _mm256_load_ps(p);
  b1 = _mm256_load_ps(p + 8);
}
inline __attribute__((always_inline)) void load_block_row(const uint16_t* p, __m256& b0,
                                                          __m256& b1) {
  const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i zero = _mm256_setzero_si256();  // one register: the 6-row tile uses 15 more
  b0 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));
  b1 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));
}
// The same as one AVX-512 vector: the row is loaded into both 256-bit halves, and one byte
// shuffle (an index with its top bit set writes a zero byte) widens the first four values of
// each 128-bit lane into lanes 0-7 and the last four of the copy into 8-15.
constexpr char kZ = -128;
#define WIDEN_FIRST kZ, kZ, 0, 1, kZ, kZ, 2, 3, kZ, kZ, 4, 5, kZ, kZ, 6, 7
#define WIDEN_SECOND kZ, kZ, 8, 9, kZ, kZ, 10, 11, kZ, kZ, 12, 13, kZ, kZ, 14, 15
alignas(64) constexpr char kWidenIndex[64] = {WIDEN_FIRST, WIDEN_FIRST, WIDEN_SECOND, WIDEN_SECOND};
#undef WIDEN_FIRST
#undef WIDEN_SECOND
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512 load_block_row512(
    const float* p) {
  return _mm512_loadu_ps(p);
}
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512 load_block_row512(
    const uint16_t* p) {
  const __m512i v =
      _mm512_maskz_broadcast_i64x4(0xff, _mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_shuffle_epi8(v, _mm512_load_si512(kWidenIndex)));
}

// Block b of a blocks-format weight, as the element type its kernels read.
template <typename T>
const T* block_of(const PackedWeight& w, int b) {
  if constexpr (std::is_same_v<T, float>)
    return w.block(b);
  else
    return w.block_bf16(b);
}

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

// Weight lines that a forward tile prefetches while it runs: `lines` cache lines from each of
// at[0] and at[1] (null: none), one of each per step of its reduction, so that the weights'
// stream from memory overlaps the multiplies. (Prefetched in a burst before the tile, they
// kept a product of a few rows waiting on memory: 4 to 16 rows ran at half the bandwidth.)
struct Prefetch {
  const char* at[2];
  int lines;
  int shift;  // one line of each every 2^shift steps
};
inline __attribute__((always_inline)) void prefetch_step(const Prefetch& pf, int k) {
  if (k & ((1 << pf.shift) - 1)) return;
  const long line = k >> pf.shift;
  if (line >= pf.lines) return;
  _mm_prefetch(pf.at[0] + 64 * line, _MM_HINT_T0);
  if (pf.at[1]) _mm_prefetch(pf.at[1] + 64 * line, _MM_HINT_T0);
}

// y[R, 16] (+)= a[K][6] · p[K][16] for R ≤ 6 rows: rows packed k-major six at a time (the
// first R used), a weight block from the slice's first input feature. The accumulators start
// at zero and y is added at the end, so a cache miss on y does not hold up the first FMAs;
// `next` (the y lines of the following tile) and `pf` are prefetched meanwhile. Each output is
// one FMA chain whatever R, so a row's value does not depend on the rows beside it.
// (Named accumulators: GCC 12 kept an array of five or six rows' AVX2 accumulators in memory.)
#define IF_ROW(m, ...)     \
  if constexpr (R > (m)) { \
    __VA_ARGS__            \
  }
#define FOR_ROWS(macro, ...)                                    \
  IF_ROW(0, macro(0 __VA_OPT__(, ) __VA_ARGS__))                \
  IF_ROW(1, macro(1 __VA_OPT__(, ) __VA_ARGS__ __VA_OPT__(+1))) \
  IF_ROW(2, macro(2 __VA_OPT__(, ) __VA_ARGS__ __VA_OPT__(+2))) \
  IF_ROW(3, macro(3 __VA_OPT__(, ) __VA_ARGS__ __VA_OPT__(+3))) \
  IF_ROW(4, macro(4 __VA_OPT__(, ) __VA_ARGS__ __VA_OPT__(+4))) \
  IF_ROW(5, macro(5 __VA_OPT__(, ) __VA_ARGS__ __VA_OPT__(+5)))
template <int R, typename T>
void forward_tile(float* y, long ldy, const float* a, const T* p, int K, bool acc,
                  const float* next, const Prefetch& pf) {
  for (int m = 0; m < R; ++m)
    _mm_prefetch(reinterpret_cast<const char*>(next + m * ldy), _MM_HINT_T0);
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int k = 0; k < K; ++k) {
    prefetch_step(pf, k);
    __m256 b0, b1;
    load_block_row(p + k * kW, b0, b1);
    const float* ak = a + k * kRows;
    FOR_ROWS(FMA_ROW, ak)
  }
  if (acc) {
    FOR_ROWS(ADD_ROW)
  }
  FOR_ROWS(STORE_ROW)
}
#undef FOR_ROWS
#undef IF_ROW

// forward_tile for two weight blocks side by side (p0, p1: 32 outputs, y's columns 0 .. 32),
// in AVX-512 accumulators: twice the FMA width with the loads of one AVX2 tile. Each output
// is the same FMA chain as there, lane for lane, so both give the same bits.
template <int R, typename T>
__attribute__((target("avx512f,avx512bw"))) void forward_tile_pair(float* y, long ldy,
                                                                   const float* a, const T* p0,
                                                                   const T* p1, int K, bool acc,
                                                                   const float* next,
                                                                   const Prefetch& pf) {
  for (int m = 0; m < R; ++m) {
    _mm_prefetch(reinterpret_cast<const char*>(next + m * ldy), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(next + m * ldy + kW), _MM_HINT_T0);
  }
  __m512 c[R][2];
  for (int m = 0; m < R; ++m) c[m][0] = c[m][1] = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int k = 0; k < K; ++k) {
    prefetch_step(pf, k);
    const __m512 b0 = load_block_row512(p0 + k * kW), b1 = load_block_row512(p1 + k * kW);
#pragma GCC unroll 6
    for (int m = 0; m < R; ++m) {
      const __m512 am = _mm512_set1_ps(a[k * kRows + m]);
      c[m][0] = _mm512_fmadd_ps(am, b0, c[m][0]);
      c[m][1] = _mm512_fmadd_ps(am, b1, c[m][1]);
    }
  }
  for (int m = 0; m < R; ++m)
    for (int h = 0; h < 2; ++h) {
      float* ym = y + m * ldy + h * kW;
      _mm512_storeu_ps(ym, acc ? _mm512_add_ps(c[m][h], _mm512_loadu_ps(ym)) : c[m][h]);
    }
}

// The tile of `rows` rows (1 to 6): with `pair`, of blocks p and p + stride.
template <int R, typename T>
void tile_of(bool pair, float* y, long ldy, const float* a, const T* p, long stride, int K,
             bool acc, const float* next, const Prefetch& pf) {
  if (pair)
    forward_tile_pair<R>(y, ldy, a, p, p + stride, K, acc, next, pf);
  else
    forward_tile<R>(y, ldy, a, p, K, acc, next, pf);
}
template <typename T>
void any_tile(int rows, bool pair, float* y, long ldy, const float* a, const T* p, long stride,
              int K, bool acc, const float* next, const Prefetch& pf) {
  switch (rows) {
    case 1:
      return tile_of<1>(pair, y, ldy, a, p, stride, K, acc, next, pf);
    case 2:
      return tile_of<2>(pair, y, ldy, a, p, stride, K, acc, next, pf);
    case 3:
      return tile_of<3>(pair, y, ldy, a, p, stride, K, acc, next, pf);
    case 4:
      return tile_of<4>(pair, y, ldy, a, p, stride, K, acc, next, pf);
    case 5:
      return tile_of<5>(pair, y, ldy, a, p, stride, K, acc, next, pf);
    default:
      return tile_of<kRows>(pair, y, ldy, a, p, stride, K, acc, next, pf);
  }
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

// Tiles [t0, t1) of rows [0, M) of x[:, 0 .. K) packed for forward_tile: tile t at
// a + t·6·K as [K][6], rows past M zero. Eight features at a time go through a register
// transpose (two of its rows unused); each stored row spills two floats into the next, which
// overwrites them, and the last is stored as four floats and two (a masked store is slow on
// AMD cores).
void pack_rows(float* a, const float* x, long ldx, int M, int K, int t0, int t1) {
  for (int t = t0; t < t1; ++t) {
    float* dst = a + static_cast<long>(t) * kRows * K;
    const float* src = x + static_cast<long>(t) * kRows * ldx;
    const int rows = std::clamp(M - t * kRows, 0, kRows);
    int k = 0;
    for (; k + 8 <= K; k += 8) {
      __m256 r[8];
      for (int m = 0; m < 8; ++m)
        r[m] = m < rows ? _mm256_loadu_ps(src + m * ldx + k) : _mm256_setzero_ps();
      transpose8(r);
      for (int j = 0; j < 7; ++j) _mm256_storeu_ps(dst + (k + j) * kRows, r[j]);
      float* last = dst + (k + 7) * kRows;
      _mm_storeu_ps(last, _mm256_castps256_ps128(r[7]));
      _mm_storel_pi(reinterpret_cast<__m64*>(last + 4), _mm256_extractf128_ps(r[7], 1));
    }
    for (; k < K; ++k)
      for (int m = 0; m < kRows; ++m) dst[k * kRows + m] = m < rows ? src[m * ldx + k] : 0.0f;
  }
}

// Rows [0, M) of y[:, b·16 .. b·16 + cols) (+)= the packed rows a · block slice p, or with
// `pair` (AVX-512 CPUs) · the two whole blocks p and p + stride (cols = 32) through the wide
// tile: six rows a tile, the last tile the rows left. A block's partial edge goes through a
// scratch tile. While they run, the slices of the blocks that come next (`next0`
// and `next1` where not null) are prefetched, a share for each tile.
template <typename T>
void forward_block(float* y, long ldy, const float* a, const T* p, long stride, int K, bool acc,
                   int M, int cols, bool pair, const T* next0, const T* next1) {
  const int tiles = (M + kRows - 1) / kRows;
  const int lines = next0 ? (K * kW * static_cast<int>(sizeof(T)) + 63) / 64 : 0;
  const int per_tile = (lines + tiles - 1) / tiles;
  const int width = pair ? 2 * kW : kW;
  for (int t = 0; t < tiles; ++t) {
    Prefetch pf{{nullptr, nullptr}, 0, 0};
    const int first = std::min(lines, t * per_tile);
    if (first < lines) {
      const int n = std::min(per_tile, lines - first);
      int shift = 0;
      while ((n << (shift + 1)) <= K) ++shift;  // spread over the tile's K steps
      pf = {{reinterpret_cast<const char*>(next0) + 64L * first,
             next1 ? reinterpret_cast<const char*>(next1) + 64L * first : nullptr},
            n,
            shift};
    }
    float* yt = y + static_cast<long>(t) * kRows * ldy;
    const float* at = a + static_cast<long>(t) * kRows * K;
    const int rows = std::min(kRows, M - t * kRows);
    if (cols == width) {
      any_tile(rows, pair, yt, ldy, at, p, stride, K, acc, t + 1 < tiles ? yt + kRows * ldy : yt,
               pf);
      continue;
    }
    alignas(64) float tile[kRows * 2 * kW] = {};
    for (int r = 0; r < rows; ++r)
      std::memcpy(tile + r * width, yt + r * ldy, cols * sizeof(float));
    any_tile(rows, pair, tile, width, at, p, stride, K, acc, tile, pf);
    for (int r = 0; r < rows; ++r)
      std::memcpy(yt + r * ldy, tile + r * width, cols * sizeof(float));
  }
}

// The input features of each reduction slice of a product with `in` inputs: equal slices of
// at most kMaxSlice.
int slice_size(int in) {
  const int slices = (in + kMaxSlice - 1) / kMaxSlice;
  return (in + slices - 1) / slices;
}

// y[R, b·16 ..) (+)= x[R, in] · B consecutive weight blocks from p (the last one's first
// `cols` outputs), the R rows together. Each output is summed as forward_tile sums it (per
// slice one FMA chain from zero, then y added), so a row has the same value whatever the row
// count of its product; the B blocks' chains run side by side, since one row's two chains
// alone wait on the FMA latency (decode at 60 % of the bandwidth bound on an AMD Zen 5).
template <int R, int B, typename T>
void gemv_blocks(float* y, long ldy, const float* x, long ldx, const T* p, long stride, int in,
                 int cols, bool acc) {
  const int slice = slice_size(in);
  for (int k0 = 0; k0 < in; k0 += slice) {
    const int k1 = std::min(in, k0 + slice);
    __m256 c[R][B][2];
    for (int r = 0; r < R; ++r)
      for (int b = 0; b < B; ++b) c[r][b][0] = c[r][b][1] = _mm256_setzero_ps();
    for (int i = k0; i < k1; ++i)
      for (int b = 0; b < B; ++b) {
        __m256 b0, b1;
        load_block_row(p + b * stride + i * kW, b0, b1);
        for (int r = 0; r < R; ++r) {
          const __m256 a = _mm256_broadcast_ss(x + r * ldx + i);
          c[r][b][0] = _mm256_fmadd_ps(a, b0, c[r][b][0]);
          c[r][b][1] = _mm256_fmadd_ps(a, b1, c[r][b][1]);
        }
      }
    const bool add = acc || k0 > 0;
    for (int r = 0; r < R; ++r)
      for (int b = 0; b < B; ++b) {
        alignas(32) float sums[kW];
        _mm256_store_ps(sums, c[r][b][0]);
        _mm256_store_ps(sums + 8, c[r][b][1]);
        float* yr = y + r * ldy + b * kW;
        const int n = b + 1 == B ? cols : kW;
        for (int j = 0; j < n; ++j) yr[j] = add ? sums[j] + yr[j] : sums[j];
      }
  }
}

// One weight block p for N < kGemvRows rows.
template <typename T>
void gemv_block(float* y, long ldy, const float* x, const T* p, long stride, int in, int cols,
                int N, bool acc) {
  if (N == 1) gemv_blocks<1, 1>(y, ldy, x, in, p, stride, in, cols, acc);
  if (N == 2) gemv_blocks<2, 1>(y, ldy, x, in, p, stride, in, cols, acc);
  if (N == 3) gemv_blocks<3, 1>(y, ldy, x, in, p, stride, in, cols, acc);
}

// y[N, out] (+)= x[N, in] · wᵀ for N < kGemvRows: each weight block is streamed from memory
// once, for all rows; one row takes kGemvBlocks blocks at a time.
constexpr int kGemvBlocks = 4;
template <typename T>
void gemv(float* y, const float* x, const PackedWeight& w, int N, bool acc) {
  const int in = w.in(), out = w.out(), nb = w.blocks();
  const int step = N == 1 ? kGemvBlocks : 1, groups = (nb + step - 1) / step;
  const long stride = w.block_stride();
#pragma omp parallel for schedule(static) if (static_cast <long>(in) * out > 65536)
  for (int g = 0; g < groups; ++g) {
    const int b0 = g * step, b1 = std::min(nb, b0 + step);
    if (b1 - b0 == kGemvBlocks) {  // one row, a whole group
      const int cols = std::min(kW, out - (b1 - 1) * kW);
      gemv_blocks<1, kGemvBlocks>(y + b0 * kW, out, x, in, block_of<T>(w, b0), stride, in, cols,
                                  acc);
      continue;
    }
    for (int b = b0; b < b1; ++b)
      gemv_block(y + b * kW, out, x, block_of<T>(w, b), stride, in, std::min(kW, out - b * kW), N,
                 acc);
  }
}

using onednn::Product;

// The products of one input x[N, in] (q/k/v, gate/up: the same `in`): the rows are packed
// once per slice and token block, and the team deals out every product's weight blocks
// together, so that a small product (k, v) does not have a barrier of its own. T is the type of
// the weights' values (float, or uint16_t for kBlocksBF16Widened's bf16).
template <typename T>
void blocks_forward_of(const Product* ps, int n, const float* x, int N) {
  if (N < kGemvRows) {
    for (int j = 0; j < n; ++j) gemv<T>(ps[j].y, x, *ps[j].w, N, ps[j].accumulate);
    return;
  }
  const int in = ps[0].w->in();
  // Product j's weight blocks are the call's blocks [first_block[j], first_block[j + 1]).
  int first_block[kMaxProducts + 1] = {0};
  for (int j = 0; j < n; ++j) first_block[j + 1] = first_block[j] + ps[j].w->blocks();
  const int nb = first_block[n];
  const int slice = slice_size(in);
  thread_local std::vector<float> packed_buf;  // the caller's, shared by its team
  const int token_blocks = (N + kTokenBlock - 1) / kTokenBlock;
  const int token_block = ((N + token_blocks - 1) / token_blocks + kRows - 1) / kRows * kRows;
  if (packed_buf.size() < static_cast<size_t>(kTokenBlock) * slice + 8)
    packed_buf.resize(static_cast<size_t>(kTokenBlock) * slice + 8);
  float* packed = aligned32(packed_buf.data());
  // Block g of all products: its weight slice from input k0 and its output columns in y from
  // token m0.
  struct BlockRef {
    const T* p;
    float* y;
    long ldy;
    int cols;
    bool acc;
    int product;  // its index in ps
  };
  auto locate = [&](int g, int k0, int m0) {
    int j = 0;
    while (g >= first_block[j + 1]) ++j;
    const PackedWeight& w = *ps[j].w;
    const int b = g - first_block[j];
    return BlockRef{block_of<T>(w, b) + static_cast<long>(k0) * kW,
                    ps[j].y + static_cast<long>(m0) * w.out() + b * kW,
                    w.out(),
                    std::min(kW, w.out() - b * kW),
                    ps[j].accumulate || k0 > 0,
                    j};
  };
  // On AVX-512 CPUs two whole blocks of a product go through one tile of twice the width.
  static const bool pairs = cpu_features().avx512();
#pragma omp parallel
  {
    // The team packs each token block's rows together, then takes chunks of weight blocks.
    for (int k0 = 0; k0 < in; k0 += slice) {
      const int K = std::min(slice, in - k0);
      for (int m0 = 0; m0 < N; m0 += token_block) {
        const int M = std::min(token_block, N - m0), tiles = (M + kRows - 1) / kRows;
        const Range share = thread_share(tiles);
        pack_rows(packed, x + static_cast<long>(m0) * in + k0, in, M, K, share.begin, share.end);
#pragma omp barrier
        for_chunks(nb, pairs ? 2 : 1, [&](int g0, int g1) {
          // The blocks of one tile from block g: two whole ones of a product on AVX-512 CPUs,
          // else one; and the second's slice.
          struct TileBlocks {
            BlockRef first;
            const T* second;
          };
          const auto tile_at = [&](int g) {
            const BlockRef r = locate(g, k0, m0);
            if (pairs && g + 1 < g1) {
              const BlockRef s = locate(g + 1, k0, m0);
              if (s.product == r.product && s.cols == kW) return TileBlocks{r, s.p};
            }
            return TileBlocks{r, nullptr};
          };
          TileBlocks cur = tile_at(g0);
          for (int g = g0; g < g1;) {
            g += cur.second ? 2 : 1;
            const TileBlocks next = g < g1 ? tile_at(g) : TileBlocks{cur.first, nullptr};
            const BlockRef& b = cur.first;
            const bool pair = cur.second != nullptr;
            forward_block(b.y, b.ldy, packed, b.p, pair ? cur.second - b.p : 0, K, b.acc, M,
                          pair ? 2 * kW : b.cols, pair, g < g1 ? next.first.p : nullptr,
                          next.second);
            cur = next;
          }
        });
      }
    }
  }
}

void blocks_forward(const Product* ps, int n, const float* x, int N) {
  if (ps[0].w->format() == WeightFormat::kBlocksBF16Widened)
    return blocks_forward_of<uint16_t>(ps, n, x, N);
  blocks_forward_of<float>(ps, n, x, N);
}

// dxt[6 rows ldt apart][16 tokens] (+)= Σ_o w[o, i..i+5] · dyp[o][16] over K outputs (a
// multiple of 16): p is the weight block holding the slice's first output, advanced to row i;
// block_stride floats lead to the next block. As in forward_tile, the accumulators start at
// zero and dxt is added at the end, so that a cache miss on it does not hold up the FMAs;
// `next` (the same rows of the next token panel) is prefetched meanwhile, and so are the
// weight lines at `next_w` (the next input tile's, given on a tile's first panel: the hardware
// prefetcher does not follow a column of blocks).
void backward_tile6(float* dxt, long ldt, const float* p, long block_stride, const float* dyp,
                    int K, bool acc, const float* next, const float* next_w) {
  for (int m = 0; m < kRows; ++m)
    _mm_prefetch(reinterpret_cast<const char*>(next + m * ldt), _MM_HINT_T0);
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
  for (int ob = 0; ob < K / kW; ++ob) {
    const float* x0 = p + ob * block_stride;
    const float *x1 = x0 + kW, *x2 = x1 + kW, *x3 = x2 + kW, *x4 = x3 + kW, *x5 = x4 + kW;
    const float* d = dyp + ob * kW * kW;
    if (next_w)
      for (int m = 0; m < kRows; ++m)
        _mm_prefetch(reinterpret_cast<const char*>(next_w + ob * block_stride + m * kW),
                     _MM_HINT_T0);
#pragma GCC unroll 4
    for (int k = 0; k < kW; ++k) {
      const __m256 b0 = _mm256_load_ps(d + k * kW), b1 = _mm256_load_ps(d + k * kW + 8);
      FMA_ROW(0, x0 + k)
      FMA_ROW(1, x1 + k) FMA_ROW(2, x2 + k) FMA_ROW(3, x3 + k) FMA_ROW(4, x4 + k) FMA_ROW(5, x5 + k)
    }
  }
  float* y = dxt;
  const long ldy = ldt;
  if (acc) {
    ADD_ROW(0) ADD_ROW(1) ADD_ROW(2) ADD_ROW(3) ADD_ROW(4) ADD_ROW(5)
  }
  STORE_ROW(0) STORE_ROW(1) STORE_ROW(2) STORE_ROW(3) STORE_ROW(4) STORE_ROW(5)
}

void backward_tail(float* dxt, long ldt, const float* p, long block_stride, const float* dyp, int K,
                   bool acc, int M) {
  for (int m = 0; m < M; ++m) {
    float* row = dxt + m * ldt;
    __m256 c0 = acc ? _mm256_load_ps(row) : _mm256_setzero_ps();
    __m256 c1 = acc ? _mm256_load_ps(row + 8) : _mm256_setzero_ps();
    for (int ob = 0; ob < K / kW; ++ob)
      for (int k = 0; k < kW; ++k) {
        const __m256 a = _mm256_broadcast_ss(p + ob * block_stride + m * kW + k);
        const float* d = dyp + (ob * kW + k) * kW;
        c0 = _mm256_fmadd_ps(a, _mm256_load_ps(d), c0);
        c1 = _mm256_fmadd_ps(a, _mm256_load_ps(d + 8), c1);
      }
    _mm256_store_ps(row, c0);
    _mm256_store_ps(row + 8, c1);
  }
}

#undef ADD_ROW
#undef FMA_ROW
#undef STORE_ROW

// dst[r, c] (+)= src[c, r] for an 8 × 8 block (rows ld_dst and ld_src floats apart).
void transpose8x8(float* dst, long ld_dst, const float* src, long ld_src, bool acc) {
  __m256 r[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * ld_src);
  transpose8(r);
  for (int k = 0; k < 8; ++k) {
    float* d = dst + k * ld_dst;
    _mm256_storeu_ps(d, acc ? _mm256_add_ps(_mm256_loadu_ps(d), r[k]) : r[k]);
  }
}

// One panel of the transposed dy: dyp[o][16] = dy[n0 + l, o0 + o] for K outputs, zero past the
// rows and the outputs; whole 8 × 8 blocks go through register transposes.
void pack_dy_panel(float* dyp, const float* dy, int N, int out, int n0, int o0, int K) {
  const int valid = std::max(0, std::min(K, out - o0));
  for (int l0 = 0; l0 < kW; l0 += 8) {
    const int rows = std::clamp(N - n0 - l0, 0, 8);
    const float* src = rows > 0 ? dy + static_cast<long>(n0 + l0) * out + o0 : dy;
    int o = 0;
    if (rows == 8)
      for (; o + 8 <= valid; o += 8) transpose8x8(dyp + o * kW + l0, kW, src + o, out, false);
    for (; o < K; ++o)
      for (int l = 0; l < 8; ++l)
        dyp[o * kW + l0 + l] = l < rows && o < valid ? src[static_cast<long>(l) * out + o] : 0.0f;
  }
}

// dx[N, in] (+)= dy[N, out] · w. The kernel keeps 16 tokens per vector, so it accumulates the
// transpose dxt[in, N'] (N' = N rounded up to 16) and the rows are transposed back at the end.
void blocks_backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate) {
  const int in = w.in(), out = w.out(), padded_out = w.blocks() * kW;
  const int NP = (N + kW - 1) / kW * kW, panels = NP / kW, tiles = (in + kRows - 1) / kRows;
  const long block_stride = w.block_stride();
  thread_local std::vector<float> dyp_buf, dxt_buf;  // the caller's, shared by its team
  const int out_slice = padded_out <= kMaxSlice ? padded_out : kOutSlice;
  if (dyp_buf.size() < static_cast<size_t>(NP) * out_slice + 8)
    dyp_buf.resize(static_cast<size_t>(NP) * out_slice + 8);
  if (dxt_buf.size() < static_cast<size_t>(tiles) * kRows * NP + 8)
    dxt_buf.resize(static_cast<size_t>(tiles) * kRows * NP + 8);
  // 32-byte aligned views (vectors of 8 floats).
  float* dyp = aligned32(dyp_buf.data());
  float* dxt = aligned32(dxt_buf.data());
#pragma omp parallel
  {
    for (int o0 = 0; o0 < padded_out; o0 += out_slice) {
      const int K = std::min(out_slice, padded_out - o0);
#pragma omp for schedule(static)
      for (int pn = 0; pn < panels; ++pn)
        pack_dy_panel(dyp + static_cast<long>(pn) * K * kW, dy, N, out, pn * kW, o0, K);
      // Chunks of input tiles, each through every panel group of this output slice.
      const float* p = w.block(o0 / kW);
      for_chunks(tiles, 1, [&](int t0, int t1) {
        for (int g = 0; g < panels; g += kPanelGroup)
          for (int tile = t0; tile < t1; ++tile) {
            const int i = tile * kRows, M = std::min(kRows, in - i);
            for (int pn = g; pn < std::min(panels, g + kPanelGroup); ++pn) {
              float* t = dxt + static_cast<long>(i) * NP + pn * kW;
              const float* d = dyp + static_cast<long>(pn) * K * kW;
              if (M == kRows)
                backward_tile6(t, NP, p + i * kW, block_stride, d, K, o0 > 0, t + kW,
                               pn == g ? p + (i + kRows) * kW : nullptr);
              else
                backward_tail(t, NP, p + i * kW, block_stride, d, K, o0 > 0, M);
            }
          }
      });
    }
    // dx[n, i] (+)= dxt[i, n]: 8 × 8 blocks transposed in registers, the edges one by one.
#pragma omp for schedule(static)
    for (int n0 = 0; n0 < N; n0 += 8)
      for (int i0 = 0; i0 < in; i0 += 8) {
        if (n0 + 8 <= N && i0 + 8 <= in) {
          transpose8x8(dx + static_cast<long>(n0) * in + i0, in,
                       dxt + static_cast<long>(i0) * NP + n0, NP, accumulate);
          continue;
        }
        for (int n = n0; n < std::min(N, n0 + 8); ++n)
          for (int i = i0; i < std::min(in, i0 + 8); ++i) {
            float& d = dx[static_cast<long>(n) * in + i];
            const float v = dxt[static_cast<long>(i) * NP + n];
            d = accumulate ? d + v : v;
          }
      }
  }
}

// The input as w's blocks kernel multiplies it: x itself, or in bf16 a copy rounded to bf16.
const float* emulated_input(const float* x, size_t n, const PackedWeight& w) {
  if (!is_bf16(w.format())) return x;
  return bf16_precision_copy(x, static_cast<long>(n));
}

// kGroupsBF16's products of one input x[N, in], rounded to bf16 once for all.
void groups_forward(const GroupsProduct* ps, int n, const float* x, int N, bool c_bf16) {
  const int in = ps[0].w->in();
  bf16_groups_forward(ps, n, bf16_copy(x, static_cast<long>(N) * in), in, N, c_bf16);
}

}  // namespace

void linear_forward(float* y, const float* x, const PackedWeight& w, const float* b, int N) {
  const LinearOut out{y, &w, b};
  linear_forward_shared(&out, 1, x, N);
}

void linear_forward_shared(const LinearOut* outs, int n, const float* x, int N) {
  if (n < 1 || n > kMaxProducts)
    throw std::invalid_argument("linear_forward_shared takes 1 to 3 outputs");
  for (int j = 1; j < n; ++j)
    if (outs[j].w->in() != outs[0].w->in() || outs[j].w->format() != outs[0].w->format())
      throw std::invalid_argument("linear_forward_shared: the weights differ in size or format");
  Product ps[kMaxProducts];
  for (int j = 0; j < n; ++j) {
    const LinearOut& o = outs[j];
    if (o.b)
      for (int r = 0; r < N; ++r)
        std::memcpy(o.y + static_cast<long>(r) * o.w->out(), o.b, o.w->out() * sizeof(float));
    ps[j] = {o.y, o.w, o.b != nullptr};
  }
  if (is_blocks(outs[0].w->format()))
    return blocks_forward(
        ps, n, emulated_input(x, static_cast<size_t>(N) * outs[0].w->in(), *outs[0].w), N);
  if (outs[0].w->format() == WeightFormat::kGroupsBF16) {
    GroupsProduct gs[kMaxProducts];
    for (int j = 0; j < n; ++j) gs[j] = {ps[j].y, ps[j].w, ps[j].accumulate};
    return groups_forward(gs, n, x, N, false);
  }
  onednn::forward(ps, n, x, N);
}

void linear_accumulate(float* y, const float* x, const PackedWeight& w, int N) {
  const Product p{y, &w, true};
  if (w.format() == WeightFormat::kGroupsBF16) {
    const GroupsProduct g{y, &w, true};
    return groups_forward(&g, 1, x, N, false);
  }
  if (!is_blocks(w.format())) return onednn::forward(&p, 1, x, N);
  blocks_forward(&p, 1, emulated_input(x, static_cast<size_t>(N) * w.in(), w), N);
}

void linear_forward_to_bf16(const LinearOutBF16* outs, int n, const float* x, int N) {
  if (n < 1 || n > kMaxProducts)
    throw std::invalid_argument("linear_forward_to_bf16 takes 1 to 3 outputs");
  const PackedWeight& w0 = *outs[0].w;
  for (int j = 1; j < n; ++j)
    if (outs[j].w->in() != w0.in() || outs[j].w->format() != w0.format())
      throw std::invalid_argument("linear_forward_to_bf16: the weights differ in size or format");
  if (is_bf16_rows(w0.format())) {
    onednn::ProductBF16 ps[kMaxProducts];
    for (int j = 0; j < n; ++j) ps[j] = {outs[j].y, outs[j].w};
    return onednn::forward_to_bf16(ps, n, x, N);
  }
  if (w0.format() == WeightFormat::kGroupsBF16) {
    GroupsProduct gs[kMaxProducts];
    for (int j = 0; j < n; ++j) gs[j] = {outs[j].y, outs[j].w, false};
    return groups_forward(gs, n, x, N, true);
  }
  if (!is_blocks(w0.format()) || !is_bf16(w0.format()))
    throw std::invalid_argument("linear_forward_to_bf16 needs a bf16 weight format");
  // The emulation: the own kernels' fp32 products of the rounded input, then rounded.
  const float* xr = emulated_input(x, static_cast<size_t>(N) * w0.in(), w0);
  thread_local std::vector<float> y32;  // grown to the largest call, then reused
  for (int j = 0; j < n; ++j) {
    const size_t size = static_cast<size_t>(N) * outs[j].w->out();
    if (y32.size() < size) y32.resize(size);
    const Product p{y32.data(), outs[j].w, false};
    blocks_forward(&p, 1, xr, N);
    round_to_bf16(outs[j].y, y32.data(), static_cast<long>(size));
  }
}

void linear_backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate) {
  if (!has_backward(w.format()))
    throw std::invalid_argument(std::string("linear_backward: ") + format_name(w.format()) +
                                " weights are for generation only");
  if (!is_blocks(w.format())) return onednn::backward(dx, dy, w, N, accumulate);
  blocks_backward(dx, emulated_input(dy, static_cast<size_t>(N) * w.out(), w), w, N, accumulate);
}

void lora_forward(float* y, float* u, const float* x, const float* A, const float* B, float scale,
                  int N, int in, int out, int r) {
  if (one_kernel_per_shape()) {
    // A row at a time through small_sgemm's one-row loops: BLAS products round a row
    // differently at some row counts, and generation batches the rows of every sequence with
    // the same adapter. The branch is a sliver of a decode step's work.
    parallel_ranges(N, 64, [&](long begin, long end) {
      for (long n = begin; n < end; ++n) {
        small_sgemm(false, true, 1, r, in, 1.0f, x + n * in, in, A, in, 0.0f, u + n * r, r);
        small_sgemm(false, true, 1, out, r, scale, u + n * r, r, B, r, 1.0f, y + n * out, out);
      }
    });
    return;
  }
  sgemm(false, true, N, r, in, 1.0f, x, in, A, in, 0.0f, u, r);
  sgemm(false, true, N, out, r, scale, u, r, B, r, 1.0f, y, out);
}

void lora_backward(float* dx, float* dA, float* dB, float* du, const float* dy, const float* u,
                   const float* x, const float* A, const float* B, float scale, int N, int in,
                   int out, int r) {
  sgemm(true, false, out, r, N, scale, dy, out, u, r, 1.0f, dB, r);
  sgemm(false, false, N, r, out, scale, dy, out, B, r, 0.0f, du, r);
  sgemm(true, false, r, in, N, 1.0f, du, r, x, in, 1.0f, dA, in);
  if (dx) sgemm(false, false, N, in, r, 1.0f, du, r, A, in, 1.0f, dx, in);
}

}  // namespace loratune::ops
