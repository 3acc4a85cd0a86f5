// The largest value of a row, sixteen running maxima in two AVX vectors: a plain max reduction
// stays a scalar chain (one compare per value, each waiting on the last), as reordering it is
// not allowed for floats without fast-math, and GCC leaves sixteen running maxima in an array
// scalar too (0.19–0.22 ns a value against 0.085–0.088 over 512 values in L1, Xeon model 207). AVX
// is the build's baseline.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <limits>

namespace loratune::ops {

inline float row_max(const float* x, int n) {
  __m256 m0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), m1 = m0;
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(x + j));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(x + j + 8));
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_max_ps(m0, m1));
  float m = *std::max_element(lanes, lanes + 8);
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

}  // namespace loratune::ops
