#include <cmath>

#include "core/threads.h"
#include "ops/ops.h"

namespace loratune::ops {

void rope_inv_freq(float* inv_freq, int D, double theta) {
  for (int i = 0; i < D / 2; ++i)
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta),
                                  static_cast<float>(2 * i) / static_cast<float>(D));
}

void rope_forward(float* x, const int* pos, const float* inv_freq, int N, int heads, int D) {
  const int half = D / 2;
  parallel_ranges(N, 2, [&](long begin, long end) {
    for (long n = begin; n < end; ++n) {
      float* row = x + n * heads * D;
      for (int i = 0; i < half; ++i) {
        // Angles in fp32, as the reference computes them: (float)pos · inv_freq.
        const float angle = static_cast<float>(pos[n]) * inv_freq[i];
        const float c = std::cos(angle), s = std::sin(angle);
        for (int h = 0; h < heads; ++h) {
          float* v = row + h * D;
          const float a = v[i], b = v[i + half];
          v[i] = a * c - b * s;
          v[i + half] = b * c + a * s;
        }
      }
    }
  });
}

}  // namespace loratune::ops

namespace loratune::ops {

void rope_backward(float* dx, const int* pos, const float* inv_freq, int N, int heads, int D) {
  const int half = D / 2;
  parallel_ranges(N, 2, [&](long begin, long end) {
    for (long n = begin; n < end; ++n) {
      float* row = dx + n * heads * D;
      for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(pos[n]) * inv_freq[i];
        const float c = std::cos(angle), s = std::sin(angle);
        for (int h = 0; h < heads; ++h) {
          float* v = row + h * D;
          const float ga = v[i], gb = v[i + half];
          v[i] = ga * c + gb * s;
          v[i + half] = gb * c - ga * s;
        }
      }
    }
  });
}

}  // namespace loratune::ops
