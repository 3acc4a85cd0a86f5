#include "ops/cpu/bf16_round.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/half.h"
#include "core/threads.h"

namespace loratune::ops {

namespace {

// Compiled for AVX-512 and called only where cpu_features() says the CPU has it.
__attribute__((target("avx512f,avx512bf16,avx512vl"))) void round_avx512_bf16(uint16_t* dst,
                                                                              const float* src,
                                                                              long n) {
  long i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh two =
        _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    _mm512_storeu_si512(dst + i, reinterpret_cast<__m512i>(two));
  }
  for (; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

// Eight floats at a time: add 0x7fff plus the lowest kept bit, keep the high half; NaNs keep
// their sign and high payload with the quiet bit set.
void round_avx2(uint16_t* dst, const float* src, long n) {
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i quiet = _mm256_set1_epi32(0x00400000);
  long i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i half[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i bits = _mm256_castps_si256(_mm256_loadu_ps(src + i + 8 * h));
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
      const __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(bias, lsb));
      const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, abs_mask), inf);
      const __m256i v = _mm256_blendv_epi8(rounded, _mm256_or_si256(bits, quiet), nan);
      half[h] = _mm256_srli_epi32(v, 16);
    }
    // packus works within 128-bit lanes: the permute puts the eight pairs back in order.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(half[0], half[1]), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
  }
  for (; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

// One range on the calling thread, with the widest conversion this CPU has.
void round_range(uint16_t* dst, const float* src, long n) {
  // Asked once: callers round a row at a time, a million rows per training step.
  static const bool avx512_bf16 = cpu_features().avx512() && cpu_features().avx512_bf16;
  if (avx512_bf16)
    round_avx512_bf16(dst, src, n);
  else
    round_avx2(dst, src, n);
}

// Below this many values one thread runs alone (the threshold these loops had when each was its
// own OpenMP region with an if clause).
constexpr long kMinParallel = 65537;

}  // namespace

void round_to_bf16_precision(float* dst, const float* src, long n) {
  parallel_ranges(n, kMinParallel, [&](long begin, long end) {
#pragma omp simd
    for (long i = begin; i < end; ++i) dst[i] = bf16_to_float(float_to_bf16(src[i]));
  });
}

void round_to_bf16(uint16_t* dst, const float* src, long n) {
  constexpr long kChunk = 1 << 14;
  const long chunks = (n + kChunk - 1) / kChunk;
  parallel_ranges(chunks, (kMinParallel + kChunk - 1) / kChunk, [&](long c0, long c1) {
    for (long c = c0; c < c1; ++c)
      round_range(dst + c * kChunk, src + c * kChunk, std::min(kChunk, n - c * kChunk));
  });
}

const uint16_t* bf16_copy(const float* src, long n) {
  thread_local std::vector<uint16_t> buf;
  if (buf.size() < static_cast<size_t>(n)) buf.resize(n);
  round_to_bf16(buf.data(), src, n);
  return buf.data();
}

const float* bf16_precision_copy(const float* src, long n) {
  thread_local std::vector<float> buf;
  if (buf.size() < static_cast<size_t>(n)) buf.resize(n);
  round_to_bf16_precision(buf.data(), src, n);
  return buf.data();
}

void widen_bf16(float* dst, const void* src, long n) {
  parallel_ranges(n, kMinParallel, [&](long begin, long end) {
#pragma omp simd
    for (long i = begin; i < end; ++i) {
      uint16_t h;
      std::memcpy(&h, static_cast<const char*>(src) + 2 * i, 2);
      dst[i] = bf16_to_float(h);
    }
  });
}

}  // namespace loratune::ops
