#include "core/bf16_dot_rate.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include "core/cpu_features.h"

namespace loratune {

namespace {

// Independent accumulators: enough to cover the instructions' latency at full throughput.
constexpr int kChains = 12;
constexpr int kIterations = 20000;
constexpr int kPasses = 5;

// Seconds of the fastest of kPasses runs of body.
template <typename Body>
double best_seconds(Body&& body) {
  double best = 1e30;
  for (int p = 0; p < kPasses; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Lane 0 of the accumulators' sum.
__attribute__((target("avx512f"))) inline float sum(const __m512* c) {
  __m512 s = c[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, c[i]);
  return _mm512_cvtss_f32(s);
}

// The accumulators' sum, returned so that the loop is not optimized away; the asm
// statement keeps the operand in a register the compiler cannot see through.
__attribute__((target("avx512f,avx512bf16"))) float dot_chains() {
  __m512 c[kChains];
  for (int i = 0; i < kChains; ++i) c[i] = _mm512_setzero_ps();
  __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = a;
  for (int it = 0; it < kIterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) c[i] = _mm512_dpbf16_ps(c[i], a, b);
    asm volatile("" : "+v"(a));
  }
  return sum(c);
}

__attribute__((target("avx512f"))) float fma_chains() {
  __m512 c[kChains];
  for (int i = 0; i < kChains; ++i) c[i] = _mm512_setzero_ps();
  __m512 a = _mm512_set1_ps(1.0f), b = a;
  for (int it = 0; it < kIterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) c[i] = _mm512_fmadd_ps(a, b, c[i]);
    asm volatile("" : "+v"(a));
  }
  return sum(c);
}

Bf16DotRate measure() {
  const CpuFeatures& f = cpu_features();
  Bf16DotRate r;
  constexpr double kInstructions = static_cast<double>(kChains) * kIterations;
  volatile float sink = 0.0f;
  if (f.avx512f)
    r.fma_gflops = kInstructions * 32 / best_seconds([&] { sink = fma_chains(); }) / 1e9;
  if (f.avx512f && f.avx512_bf16)
    r.dot_gflops = kInstructions * 64 / best_seconds([&] { sink = dot_chains(); }) / 1e9;
  (void)sink;
  return r;
}

}  // namespace

const Bf16DotRate& bf16_dot_rate() {
  static const Bf16DotRate rate = measure();
  return rate;
}

}  // namespace loratune
