// exp(x) in float, within 2 ulp of the exact value, written with plain arithmetic and
// selects only, so that loops over arrays vectorize (a libm call keeps them scalar).
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

namespace loratune::ops {

// x = n·ln2 + r with |r| ≤ ln2/2; e^r from the Cephes expf polynomial; 2^n goes straight
// into the exponent bits. Below −87 (where e^x would be subnormal) the result is 0, above 88
// it is +inf: what softmax and sigmoid need.
inline float fast_exp(float x) {
  // Adding 1.5·2^23 rounds to an integer that lands in the low mantissa bits.
  constexpr float kRound = 12582912.0f;
  const float t = x * 1.44269504088896341f + kRound;
  const float n = t - kRound;
  const uint32_t n_bits = std::bit_cast<uint32_t>(t) - std::bit_cast<uint32_t>(kRound);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // ln2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float e = p * std::bit_cast<float>((n_bits + 127u) << 23);
  return x < -87.0f ? 0.0f : (x > 88.0f ? std::numeric_limits<float>::infinity() : e);
}

}  // namespace loratune::ops
