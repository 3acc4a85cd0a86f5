// LoRA dropout's keep masks (model/transformer.h: Dropout, dropout_mask).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "model/transformer.h"

namespace loratune {

namespace {

// splitmix64 finaliser: a counter-based hash, so a mask bit depends only on its position.
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// z · c mod 2^64 in each 64-bit lane, from AVX2's 32 × 32-bit products.
__m256i mul64(__m256i z, uint64_t c) {
  const __m256i c_lo = _mm256_set1_epi64x(static_cast<long long>(c & 0xffffffffu));
  const __m256i c_hi = _mm256_set1_epi64x(static_cast<long long>(c >> 32));
  const __m256i cross =
      _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(z, 32), c_lo), _mm256_mul_epu32(z, c_hi));
  return _mm256_add_epi64(_mm256_mul_epu32(z, c_lo), _mm256_slli_epi64(cross, 32));
}

// mix() of four counters at once.
__m256i mix4(__m256i z) {
  z = _mm256_add_epi64(z, _mm256_set1_epi64x(static_cast<long long>(0x9e3779b97f4a7c15ull)));
  z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), 0xbf58476d1ce4e5b9ull);
  z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), 0x94d049bb133111ebull);
  return _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
}

// Bits 0..3 of b moved to bits 0, 2, 4, 6: a table, not BMI2's pdep, which AMD Zen 1 and 2 run
// in microcode.
uint64_t even_bits(unsigned b) {
  static constexpr uint8_t kEven[16] = {0x00, 0x01, 0x04, 0x05, 0x10, 0x11, 0x14, 0x15,
                                        0x40, 0x41, 0x44, 0x45, 0x50, 0x51, 0x54, 0x55};
  return kEven[b];
}

}  // namespace

void dropout_mask(uint64_t* bits, const Dropout& d, int layer, LoraModule m, int token, int in) {
  const uint64_t base =
      mix(d.seed ^ (static_cast<uint64_t>(layer * kNumLoraModules + static_cast<int>(m)) << 40));
  // Feature i takes half i % 2 (low, high) of hash i / 2 of its token as a 32-bit uniform u, and
  // is kept when u · 2^-32 ≥ p, i.e. u ≥ ceil(p · 2^32) (both sides exact in double).
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(static_cast<double>(d.p) * 0x1.0p32));
  const uint64_t first = base + static_cast<uint64_t>(d.token_offset + token) * ((in + 1) / 2);
  std::fill(bits, bits + ops::lora_keep_words(in), 0);
  // Eight features (four hashes) at a time; both halves and threshold − 1 lie below 2^32 + 1, so
  // the signed 64-bit compare holds.
  const __m256i above = _mm256_set1_epi64x(static_cast<long long>(threshold) - 1);
  const __m256i low = _mm256_set1_epi64x(0xffffffffll);
  int i = 0;
  for (; i + 8 <= in; i += 8) {
    const __m256i u = mix4(_mm256_add_epi64(
        _mm256_set1_epi64x(static_cast<long long>(first + i / 2)), _mm256_setr_epi64x(0, 1, 2, 3)));
    const auto kept = [&](__m256i half) {
      return static_cast<unsigned>(
          _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(half, above))));
    };
    const uint64_t byte =
        even_bits(kept(_mm256_and_si256(u, low))) | even_bits(kept(_mm256_srli_epi64(u, 32))) << 1;
    bits[i / 64] |= byte << (i % 64);
  }
  for (; i < in; ++i) {
    const uint64_t u = mix(first + i / 2);
    const uint64_t half = i % 2 ? u >> 32 : u & 0xffffffffu;
    bits[i / 64] |= static_cast<uint64_t>(half >= threshold) << (i % 64);
  }
}

}  // namespace loratune
