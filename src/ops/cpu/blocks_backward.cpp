// The input gradient of the blocks kernels (blocks_kernel.h): dxᵀ accumulated with the
// forward's tile shape over dy packed transposed, the weights read as they lie.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "ops/cpu/blocks_common.h"
#include "ops/cpu/blocks_kernel.h"

namespace loratune::ops::blocks {

namespace {

// Input gradient: dy is packed (transposed, kW tokens per panel) all outputs at once when
// there are at most kMaxSlice (one pass over dxᵀ), else kOutSlice at a time (the lm_head's
// packed dy then stays in L2); kPanelGroup token panels (512 tokens) are walked per input
// tile while its weights sit in L1 (smaller groups re-read down_proj's weight slice from
// memory once per group).
constexpr int kOutSlice = 256;
constexpr int kPanelGroup = 32;

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

}  // namespace

// dx[N, in] (+)= dy[N, out] · w. The kernel keeps 16 tokens per vector, so it accumulates the
// transpose dxt[in, N'] (N' = N rounded up to 16) and the rows are transposed back at the end.
void backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate) {
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

}  // namespace loratune::ops::blocks
