#include "ops/cpu/amx_rows_kernel.h"

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/half.h"

namespace loratune::ops {

namespace {

constexpr int kTileRows = 16;  // outputs per A tile, input rows per B tile
constexpr int kTileK = 32;     // bf16 inputs per tile step
constexpr int kTileElems = kTileRows * kTileK;

// Linux hands out the tile data state only on request (arch_prctl ARCH_REQ_XCOMP_PERM).
bool tile_data_permitted() {
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

// Palette 1, tiles 0-7 all 16 rows of 64 bytes: 0-3 accumulators, 4-5 weights, 6-7 inputs.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
  TileConfig() {
    for (int t = 0; t < 8; ++t) {
      colsb[t] = kTileK * 2;
      rows[t] = kTileRows;
    }
  }
};

struct Call {
  void* c;
  bool c_bf16;
  const uint16_t* packed;  // the input rows as B tiles [row block][step][K pair][row][2]
  int N, K, out, steps;
  bool accumulate;
};

// c's element (row n, output o) from the tile sum s.
inline void put(const Call& k, int n, int o, float s) {
  const long at = static_cast<long>(n) * k.out + o;
  if (k.c_bf16)
    static_cast<uint16_t*>(k.c)[at] = float_to_bf16(s);
  else
    static_cast<float*>(k.c)[at] = k.accumulate ? static_cast<float*>(k.c)[at] + s : s;
}

// Outputs o0.. (WA tiles of 16) against input row blocks b0.. (WB blocks of 16). w points at
// the 16·WA weight rows (stride ldw elements), zero-padded where `out` ends.
template <int WA, int WB>
__attribute__((target("amx-tile,amx-bf16"))) void block(const Call& k, const uint16_t* w, long ldw,
                                                        int o0, int b0) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const long wstride = ldw * 2;
  for (int s = 0; s < k.steps; ++s) {
    _tile_loadd(4, w + s * kTileK, wstride);
    if (WA > 1) _tile_loadd(5, w + kTileRows * ldw + s * kTileK, wstride);
    const uint16_t* in = k.packed + (static_cast<long>(b0) * k.steps + s) * kTileElems;
    _tile_loadd(6, in, kTileK * 2);
    if (WB > 1) _tile_loadd(7, in + static_cast<long>(k.steps) * kTileElems, kTileK * 2);
    _tile_dpbf16ps(0, 4, 6);
    if (WB > 1) _tile_dpbf16ps(1, 4, 7);
    if (WA > 1) _tile_dpbf16ps(2, 5, 6);
    if (WA > 1 && WB > 1) _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float sums[4][kTileRows][kTileRows];  // [tile][output][input row]
  _tile_stored(0, sums[0], kTileRows * 4);
  if (WB > 1) _tile_stored(1, sums[1], kTileRows * 4);
  if (WA > 1) _tile_stored(2, sums[2], kTileRows * 4);
  if (WA > 1 && WB > 1) _tile_stored(3, sums[3], kTileRows * 4);
  for (int ta = 0; ta < WA; ++ta)
    for (int tb = 0; tb < WB; ++tb)
      for (int r = 0; r < kTileRows; ++r) {
        const int n = (b0 + tb) * kTileRows + r;
        if (n >= k.N) break;
        for (int j = 0; j < kTileRows; ++j) {
          const int o = o0 + ta * kTileRows + j;
          if (o < k.out) put(k, n, o, sums[ta * 2 + tb][j][r]);
        }
      }
}

// a[N, K] (rows lda apart) as B tiles: element (pair p, row r, j) of step s of row block b is
// a[16b + r, 32s + 2p + j], zero past N and K.
void pack_inputs(uint16_t* packed, const uint16_t* a, long lda, int N, int K, int steps) {
  const int blocks = (N + kTileRows - 1) / kTileRows;
  std::memset(packed, 0, static_cast<size_t>(blocks) * steps * kTileElems * sizeof(uint16_t));
  for (int n = 0; n < N; ++n) {
    uint16_t* dst =
        packed + static_cast<long>(n / kTileRows) * steps * kTileElems + (n % kTileRows) * 2;
    for (int i = 0; i < K; ++i)
      dst[static_cast<long>(i / kTileK) * kTileElems + (i % kTileK) / 2 * kTileRows * 2 + i % 2] =
          a[n * lda + i];
  }
}

// One thread's share of the output groups, inside kernel's parallel region. (A function of its
// own: compilers do not carry a function's target attribute into the OpenMP regions they
// outline from it, and the tile instructions need it.)
__attribute__((target("amx-tile,amx-bf16"))) void thread_share(const Call& k, const uint16_t* w) {
  const int groups = (k.out + 2 * kTileRows - 1) / (2 * kTileRows);
  const int blocks = (k.N + kTileRows - 1) / kTileRows;
  const long kpad = static_cast<long>(k.steps) * kTileK;
  static const TileConfig config;
  _tile_loadconfig(&config);
  // Weight rows that a tile cannot read in place (K not a multiple of 32, or the last
  // outputs): copied zero-padded.
  thread_local std::vector<uint16_t> copy;
#pragma omp for schedule(static)
  for (int g = 0; g < groups; ++g) {
    const int o0 = g * 2 * kTileRows, rows = std::min(2 * kTileRows, k.out - o0);
    const uint16_t* wg = w + static_cast<long>(o0) * k.K;
    long ldw = k.K;
    if (k.K % kTileK != 0 || rows < 2 * kTileRows) {
      copy.assign(2 * kTileRows * kpad, 0);
      for (int r = 0; r < rows; ++r)
        std::memcpy(&copy[r * kpad], wg + static_cast<long>(r) * k.K, k.K * sizeof(uint16_t));
      wg = copy.data();
      ldw = kpad;
    }
    const bool two_a = rows > kTileRows;
    int b = 0;
    for (; b + 2 <= blocks; b += 2)
      two_a ? block<2, 2>(k, wg, ldw, o0, b) : block<1, 2>(k, wg, ldw, o0, b);
    if (b < blocks) two_a ? block<2, 1>(k, wg, ldw, o0, b) : block<1, 1>(k, wg, ldw, o0, b);
  }
  _tile_release();
}

void kernel(const Call& k, const uint16_t* w) {
#pragma omp parallel if (static_cast <long>(k.out) * k.K > 65536)
  thread_share(k, w);
}

}  // namespace

bool amx_rows_kernel_available() {
  static const bool available = cpu_features().amx_bf16 && tile_data_permitted();
  return available;
}

void amx_rows_forward(void* c, bool c_bf16, const uint16_t* a, long lda, const uint16_t* w, int N,
                      int K, int out, bool accumulate) {
  if (N <= 0 || out <= 0) return;
  const int steps = (K + kTileK - 1) / kTileK;
  thread_local std::vector<uint16_t> packed;  // grown to the largest call, then reused
  const size_t need = static_cast<size_t>((N + kTileRows - 1) / kTileRows) * steps * kTileElems;
  if (packed.size() < need) packed.resize(need);
  pack_inputs(packed.data(), a, lda, N, K, steps);
  kernel({c, c_bf16, packed.data(), N, K, out, steps, accumulate}, w);
}

}  // namespace loratune::ops
