// The largest value of a row, in a form the compiler vectorizes: a plain max reduction
// stays a scalar chain (one compare per value, each waiting on the last), because reordering
// it is not allowed for floats without fast-math; sixteen running maxima are.
#pragma once

#include <algorithm>
#include <limits>

namespace loratune::ops {

inline float row_max(const float* x, int n) {
  constexpr int kLanes = 16;
  float lane[kLanes];
  std::fill_n(lane, kLanes, -std::numeric_limits<float>::infinity());
  int j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) lane[k] = std::max(lane[k], x[j + k]);
  float m = *std::max_element(lane, lane + kLanes);
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

}  // namespace loratune::ops
