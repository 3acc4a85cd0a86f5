// The forward of the blocks kernels (blocks_kernel.h): rows packed six at a time against one
// weight block per register tile, or (AVX-512) twelve rows against two, a few rows as
// matrix-vector products.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/cpu_features.h"
#include "ops/cpu/blocks_common.h"
#include "ops/cpu/blocks_kernel.h"

namespace loratune::ops::blocks {

namespace {

// Token blocks of at most kTokenBlock rows (a multiple of kRows; the blocks of a product are
// of equal size), packed so that each tile broadcasts from one contiguous stream.
constexpr int kTokenBlock = 264;
// Rows of a pair tile (AVX-512): two packed tiles, 24 of the 32 vector registers accumulating.
// kBlocksBF16Widened spends one byte shuffle per 16 outputs and step on the FMA ports: 2 per
// 24 FMAs instead of 2 per 12 (the Xeon model 207 at 512 rows: 256-259 → 280-285 GFLOP/s; fp32
// blocks 303-308 → 315-318).
constexpr int kPairRows = 2 * kRows;
// Below this many rows a product is a few matrix-vector products: memory-bound.
constexpr int kGemvRows = 4;  // gemv() takes 1 to 3 rows

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
  // One register (two shuffle indices made the 6-row tile spill an accumulator).
  const __m256i zero = _mm256_setzero_si256();
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

// Weight lines that a forward tile prefetches while it runs: `lines` cache lines from each of
// at[0] and at[1] (null: none), spread evenly over the steps of its reduction, so that the
// weights' stream from memory overlaps the multiplies. (Prefetched in a burst before the tile,
// or one a step from the first, they kept products of a few rows waiting on memory: 8 to 16
// rows ran at 10-15 of the 25 GB/s, docs/performance.md.)
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
// is the same FMA chain as there, lane for lane, so both give the same bits. R may be up to
// kPairRows: rows past six are the next packed tile's (at a + 6·K).
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
#pragma GCC unroll 12
    for (int m = 0; m < R; ++m) {
      const float* row = m < kRows ? a + k * kRows + m : a + (K + k) * kRows + m - kRows;
      const __m512 am = _mm512_set1_ps(*row);
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

// The tile of R rows: with `pair`, of blocks p and p + stride (more than six rows: pair tiles
// only).
template <int R, typename T>
void tile_of(bool pair, float* y, long ldy, const float* a, const T* p, long stride, int K,
             bool acc, const float* next, const Prefetch& pf) {
  if constexpr (R > kRows)
    forward_tile_pair<R>(y, ldy, a, p, p + stride, K, acc, next, pf);
  else if (pair)
    forward_tile_pair<R>(y, ldy, a, p, p + stride, K, acc, next, pf);
  else
    forward_tile<R>(y, ldy, a, p, K, acc, next, pf);
}
// tile_of for `rows` rows, 1 to kPairRows.
template <typename T, int... R>
void tile_of_rows(std::integer_sequence<int, R...>, int rows, bool pair, float* y, long ldy,
                  const float* a, const T* p, long stride, int K, bool acc, const float* next,
                  const Prefetch& pf) {
  using Tile = void (*)(bool, float*, long, const float*, const T*, long, int, bool, const float*,
                        const Prefetch&);
  static constexpr Tile kTiles[] = {&tile_of<R + 1, T>...};
  kTiles[rows - 1](pair, y, ldy, a, p, stride, K, acc, next, pf);
}
template <typename T>
void any_tile(int rows, bool pair, float* y, long ldy, const float* a, const T* p, long stride,
              int K, bool acc, const float* next, const Prefetch& pf) {
  tile_of_rows(std::make_integer_sequence<int, kPairRows>(), rows, pair, y, ldy, a, p, stride, K,
               acc, next, pf);
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
// tile: six rows a tile (twelve on a pair), the last tile the rows left. A block's partial
// edge goes through a scratch tile of six rows. While they run, the slices of the blocks that
// come next (`next0` and `next1` where not null) are prefetched, a share for each tile spread
// over its steps.
template <typename T>
void forward_block(float* y, long ldy, const float* a, const T* p, long stride, int K, bool acc,
                   int M, int cols, bool pair, const T* next0, const T* next1) {
  const int width = pair ? 2 * kW : kW;
  const int tile_rows = pair && cols == width ? kPairRows : kRows;
  const int tiles = (M + tile_rows - 1) / tile_rows;
  const int lines = next0 ? (K * kW * static_cast<int>(sizeof(T)) + 63) / 64 : 0;
  const int per_tile = (lines + tiles - 1) / tiles;
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
    float* yt = y + static_cast<long>(t) * tile_rows * ldy;
    const float* at = a + static_cast<long>(t) * tile_rows * K;
    const int rows = std::min(tile_rows, M - t * tile_rows);
    if (cols == width) {
      any_tile(rows, pair, yt, ldy, at, p, stride, K, acc,
               t + 1 < tiles ? yt + tile_rows * ldy : yt, pf);
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

// The products of one input x[N, in] (q/k/v, gate/up: the same `in`): the rows are packed
// once per slice and token block, and the team deals out every product's weight blocks
// together, so that a small product (k, v) does not have a barrier of its own. T is the type of
// the weights' values (float, or uint16_t for kBlocksBF16Widened's bf16).
template <typename T>
void forward_of(const onednn::Product* ps, int n, const float* x, int N) {
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

}  // namespace

void forward(const onednn::Product* ps, int n, const float* x, int N) {
  if (ps[0].w->format() == WeightFormat::kBlocksBF16Widened)
    return forward_of<uint16_t>(ps, n, x, N);
  forward_of<float>(ps, n, x, N);
}

}  // namespace loratune::ops::blocks
