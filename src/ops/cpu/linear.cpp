#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/ops.h"

namespace loratune::ops {

namespace {

constexpr int kW = PackedWeight::kWidth;  // outputs per weight block: two 8-float vectors
// Micro-tile: kRows rows × kW columns in 12 vector accumulators (of 16 registers).
constexpr int kRows = 6;
// A product's reduction runs in slices of at most kMaxSlice over token blocks of at most
// kTokenBlock rows in the forward, kGradTokenBlock in the input gradient (a multiple of kRows;
// the blocks of a product are of equal size), the rows packed so that each tile broadcasts
// from one contiguous stream. Long slices beat L1-sized ones (256) by about 10 %: every slice
// is another pass over y. The input gradient transposes each weight panel once per token
// block, so its blocks are larger: one for a whole 512-token group.
constexpr int kMaxSlice = 1024;
constexpr int kTokenBlock = 264;
constexpr int kGradTokenBlock = 528;
// The products' work is dealt out in chunks, about this many per thread, to whichever thread
// is free: a thread that the machine holds up does not keep the other waiting at the barrier.
constexpr int kChunksPerThread = 8;
// Below this many rows a product is a few matrix-vector products: memory-bound.
constexpr int kGemvRows = 4;

// The calling thread's share [begin, end) of n items, split into contiguous ranges over the
// team of the enclosing parallel region.
struct Range {
  int begin, end;
};
Range thread_share(int n) {
  const long t = omp_get_thread_num(), nt = omp_get_num_threads();
  return {static_cast<int>(n * t / nt), static_cast<int>(n * (t + 1) / nt)};
}

// Items per chunk when n items are dealt out over the calling team.
int chunk_size(int n) {
  return std::max(1, n / (omp_get_num_threads() * kChunksPerThread));
}

// The first 32-byte aligned float of a buffer allocated 8 floats longer than it needs.
float* aligned32(float* p) {
  return p + (8 - reinterpret_cast<uintptr_t>(p) / sizeof(float) % 8) % 8;
}

#define FMA_ROW(m, src)                        \
  {                                            \
    const __m256 a = _mm256_broadcast_ss(src); \
    c##m##0 = _mm256_fmadd_ps(a, b0, c##m##0); \
    c##m##1 = _mm256_fmadd_ps(a, b1, c##m##1); \
  }
#define STORE_ROW(m)                      \
  _mm256_storeu_ps(y + (m)*ldy, c##m##0); \
  _mm256_storeu_ps(y + (m)*ldy + 8, c##m##1);

// y[6, 16] (+)= a[K][6] · p[K][16]: six rows packed k-major, a weight block from the slice's
// first input feature. The accumulators start at zero and y is added at the end, so a cache
// miss on y does not hold up the first FMAs; `next` (the y lines of the following tile) is
// prefetched meanwhile.
void forward_tile6(float* y, long ldy, const float* a, const float* p, int K, bool acc,
                   const float* next) {
  for (int m = 0; m < kRows; ++m)
    _mm_prefetch(reinterpret_cast<const char*>(next + m * ldy), _MM_HINT_T0);
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_load_ps(p + k * kW), b1 = _mm256_load_ps(p + k * kW + 8);
    const float* ak = a + k * kRows;
    FMA_ROW(0, ak)
    FMA_ROW(1, ak + 1) FMA_ROW(2, ak + 2) FMA_ROW(3, ak + 3) FMA_ROW(4, ak + 4) FMA_ROW(5, ak + 5)
  }
  if (acc) {
#define ADD_ROW(m)                                                \
  c##m##0 = _mm256_add_ps(c##m##0, _mm256_loadu_ps(y + (m)*ldy)); \
  c##m##1 = _mm256_add_ps(c##m##1, _mm256_loadu_ps(y + (m)*ldy + 8));
    ADD_ROW(0) ADD_ROW(1) ADD_ROW(2) ADD_ROW(3) ADD_ROW(4) ADD_ROW(5)
#undef ADD_ROW
  }
  STORE_ROW(0) STORE_ROW(1) STORE_ROW(2) STORE_ROW(3) STORE_ROW(4) STORE_ROW(5)
}

// Transposes the 8 × 8 matrix whose rows are r[0..7], in place.
void transpose8(__m256 r[8]) {
  __m256 t[8];
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
  }
  for (int k = 0; k < 8; k += 4) {
    r[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[0..3] hold columns 0,1,2,3 of rows 0-3 (low lane) and 4,5,6,7 (high lane); likewise
  // r[4..7] for rows 4-7.
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x20);
    t[k + 4] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x31);
  }
  for (int k = 0; k < 8; ++k) r[k] = t[k];
}

// dst[r, c] = src[c, r] for an 8 × 8 block (rows ld_dst and ld_src floats apart).
void transpose8x8(float* dst, long ld_dst, const float* src, long ld_src) {
  __m256 r[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * ld_src);
  transpose8(r);
  for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + k * ld_dst, r[k]);
}

// Tiles [t0, t1) of rows [0, M) of x[:, 0 .. K) packed for forward_tile6: tile t at
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

// Rows [0, M) of y[:, b·16 .. b·16 + cols) (+)= the packed rows a · block slice p. Tiles past
// the rows' or the block's edge go through a full scratch tile. While it runs, the next
// block's slice (`next_p`, K lines) is prefetched a few lines per tile.
void forward_block(float* y, long ldy, const float* a, const float* p, int K, bool acc, int M,
                   int cols, const float* next_p, long next_stride) {
  const int tiles = (M + kRows - 1) / kRows, per_tile = (K + tiles - 1) / tiles;
  for (int t = 0; t < tiles; ++t) {
    for (int l = t * per_tile; l < std::min(K, (t + 1) * per_tile); ++l)
      _mm_prefetch(reinterpret_cast<const char*>(next_p + l / kW * next_stride + l % kW * kW),
                   _MM_HINT_T0);
    float* yt = y + static_cast<long>(t) * kRows * ldy;
    const float* at = a + static_cast<long>(t) * kRows * K;
    const int rows = std::min(kRows, M - t * kRows);
    if (rows == kRows && cols == kW) {
      forward_tile6(yt, ldy, at, p, K, acc, t + 1 < tiles ? yt + kRows * ldy : yt);
      continue;
    }
    alignas(32) float tile[kRows * kW] = {};
    for (int r = 0; r < rows; ++r) std::memcpy(tile + r * kW, yt + r * ldy, cols * sizeof(float));
    forward_tile6(tile, kW, at, p, K, acc, tile);
    for (int r = 0; r < rows; ++r) std::memcpy(yt + r * ldy, tile + r * kW, cols * sizeof(float));
  }
}

// y[N, out] (+)= x[N, in] · wᵀ for N < kGemvRows: each weight block is streamed from memory
// once, every row's two accumulators fed from it.
void gemv(float* y, const float* x, const PackedWeight& w, int N, bool acc) {
  const int in = w.in(), out = w.out(), nb = w.blocks();
#pragma omp parallel for schedule(static) if (static_cast <long>(in) * out > 65536)
  for (int b = 0; b < nb; ++b) {
    const float* p = w.block(b);
    const int cols = std::min(kW, out - b * kW);
    for (int n = 0; n < N; ++n) {
      const float* xn = x + static_cast<long>(n) * in;
      __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
      __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();  // a second chain per half
      int i = 0;
      for (; i + 1 < in; i += 2) {
        const __m256 a = _mm256_broadcast_ss(xn + i), e = _mm256_broadcast_ss(xn + i + 1);
        c0 = _mm256_fmadd_ps(a, _mm256_load_ps(p + i * kW), c0);
        c1 = _mm256_fmadd_ps(a, _mm256_load_ps(p + i * kW + 8), c1);
        d0 = _mm256_fmadd_ps(e, _mm256_load_ps(p + (i + 1) * kW), d0);
        d1 = _mm256_fmadd_ps(e, _mm256_load_ps(p + (i + 1) * kW + 8), d1);
      }
      if (i < in) {
        const __m256 a = _mm256_broadcast_ss(xn + i);
        c0 = _mm256_fmadd_ps(a, _mm256_load_ps(p + i * kW), c0);
        c1 = _mm256_fmadd_ps(a, _mm256_load_ps(p + i * kW + 8), c1);
      }
      alignas(32) float sums[kW];
      _mm256_store_ps(sums, _mm256_add_ps(c0, d0));
      _mm256_store_ps(sums + 8, _mm256_add_ps(c1, d1));
      float* yn = y + static_cast<long>(n) * out + b * kW;
      for (int j = 0; j < cols; ++j) yn[j] = acc ? yn[j] + sums[j] : sums[j];
    }
  }
}

struct Panel {
  const float* p;
  const float* next_p;  // line l of the next panel at next_p + (l / kW)·next_stride + (l % kW)·kW
  long next_stride;
};

// y[N, out] (+)= x[N, red] · Pᵀ, where P[out, red] comes in blocks of kW outputs: panel(b, k0,
// K) returns rows k0 .. k0 + K of block b as [K][kW] and, second, where to prefetch the next
// block's. Shared by the forward (P the packed weight) and the input gradient (P its
// transpose, made a panel at a time).
template <class PanelOf>
void product(float* y, const float* x, int N, int red, int out, bool accumulate, int max_rows,
             PanelOf panel) {
  const int nb = (out + kW - 1) / kW;
  // Slices start on a block boundary: the input gradient transposes whole 16 × 16 blocks.
  const int slices = (red + kMaxSlice - 1) / kMaxSlice;
  const int slice = ((red + slices - 1) / slices + kW - 1) / kW * kW;
  thread_local std::vector<float> packed_buf;  // the caller's, shared by its team
  const int token_blocks = (N + max_rows - 1) / max_rows;
  const int token_block = ((N + token_blocks - 1) / token_blocks + kRows - 1) / kRows * kRows;
  if (packed_buf.size() < static_cast<size_t>(token_block) * slice + 8)
    packed_buf.resize(static_cast<size_t>(token_block) * slice + 8);
  float* packed = aligned32(packed_buf.data());
#pragma omp parallel
  {
    // The team packs each token block's rows together, then takes chunks of output blocks.
    const int cs = chunk_size(nb), chunks = (nb + cs - 1) / cs;
    for (int k0 = 0; k0 < red; k0 += slice) {
      const int K = std::min(slice, red - k0);
      for (int m0 = 0; m0 < N; m0 += token_block) {
        const int M = std::min(token_block, N - m0), tiles = (M + kRows - 1) / kRows;
        const Range share = thread_share(tiles);
        pack_rows(packed, x + static_cast<long>(m0) * red + k0, red, M, K, share.begin, share.end);
#pragma omp barrier
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < chunks; ++c) {
          const int b1 = std::min(nb, (c + 1) * cs);
          for (int b = c * cs; b < b1; ++b) {
            const Panel pn = panel(b, k0, K, b + 1 < b1);
            forward_block(y + static_cast<long>(m0) * out + b * kW, out, packed, pn.p, K,
                          accumulate || k0 > 0, M, std::min(kW, out - b * kW), pn.next_p,
                          pn.next_stride);
          }
        }
      }
    }
  }
}

void forward(float* y, const float* x, const PackedWeight& w, int N, bool accumulate) {
  if (N < kGemvRows) return gemv(y, x, w, N, accumulate);
  product(y, x, N, w.in(), w.out(), accumulate, kTokenBlock, [&w](int b, int k0, int, bool more) {
    const float* p = w.block(b) + static_cast<long>(k0) * kW;
    return Panel{p, more ? p + w.block_stride() : p, kW * kW};
  });
}

#undef FMA_ROW
#undef STORE_ROW

// dx[N, in] (+)= dy[N, out] · w: the forward's product with the weight's transpose as P, each
// panel (kW inputs × a slice of outputs) transposed from the packed weight into a per-thread
// buffer just before the kernel reads it, 16 × 16 blocks through register transposes. The
// next panel's source (rows i0 + kW.. of each block of the slice) is prefetched meanwhile.
void backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate) {
  const int in = w.in();
  product(dx, dy, N, w.out(), in, accumulate, kGradTokenBlock,
          [&w, in](int b, int k0, int K, bool more) {
            thread_local std::vector<float> buf;
            if (buf.size() < static_cast<size_t>(kMaxSlice + kW) * kW + 8)
              buf.resize(static_cast<size_t>(kMaxSlice + kW) * kW + 8);
            float* t = aligned32(buf.data());
            const int i0 = b * kW, cols = std::min(kW, in - i0);
            for (int o = 0; o < K; o += kW) {
              const float* src = w.block((k0 + o) / kW) + static_cast<long>(i0) * kW;  // [cols][kW]
              float* dst = t + static_cast<long>(o) * kW;                              // [kW][kW]
              if (cols == kW) {
                for (int r = 0; r < kW; r += 8)
                  for (int c = 0; c < kW; c += 8)
                    transpose8x8(dst + r * kW + c, kW, src + c * kW + r, kW);
                continue;
              }
              for (int r = 0; r < kW; ++r)
                for (int c = 0; c < kW; ++c) dst[r * kW + c] = c < cols ? src[c * kW + r] : 0.0f;
            }
            if (!more) return Panel{t, t, kW * kW};
            return Panel{t, w.block(k0 / kW) + static_cast<long>(i0 + kW) * kW, w.block_stride()};
          });
}

}  // namespace

void linear_forward(float* y, const float* x, const PackedWeight& w, const float* b, int N) {
  if (b)
    for (int n = 0; n < N; ++n)
      std::memcpy(y + static_cast<long>(n) * w.out(), b, w.out() * sizeof(float));
  forward(y, x, w, N, b != nullptr);
}

void linear_accumulate(float* y, const float* x, const PackedWeight& w, int N) {
  forward(y, x, w, N, true);
}

void linear_backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate) {
  backward(dx, dy, w, N, accumulate);
}

void lora_forward(float* y, float* u, const float* x, const float* A, const float* B, float scale,
                  int N, int in, int out, int r) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, in, 1.0f, x, in, A, in, 0.0f, u, r);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, r, scale, u, r, B, r, 1.0f, y, out);
}

void lora_backward(float* dx, float* dA, float* dB, float* du, const float* dy, const float* u,
                   const float* x, const float* A, const float* B, float scale, int N, int in,
                   int out, int r) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, N, scale, dy, out, u, r, 1.0f, dB,
              r);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, r, out, scale, dy, out, B, r, 0.0f, du,
              r);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, N, 1.0f, du, r, x, in, 1.0f, dA, in);
  if (dx)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, r, 1.0f, du, r, A, in, 1.0f, dx,
                in);
}

}  // namespace loratune::ops
