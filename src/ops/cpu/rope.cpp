#include <cmath>

#include "core/threads.h"
#include "ops/ops.h"

namespace loratune::ops {

void rope_inv_freq(float* inv_freq, int D, double theta) {
  for (int i = 0; i < D / 2; ++i)
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta),
                                  static_cast<float>(2 * i) / static_cast<float>(D));
}

namespace {

// Rotates each pair (x[i], x[i + D/2]) of every head by the angle pos · inv_freq[i] times
// `direction`: +1 is RoPE, −1 its transpose, which takes the gradient back through it.
void rotate(float* x, const int* pos, const float* inv_freq, int N, int heads, int D,
            float direction) {
  const int half = D / 2;
  parallel_ranges(N, 2, [&](long begin, long end) {
    for (long n = begin; n < end; ++n) {
      float* row = x + n * heads * D;
      for (int i = 0; i < half; ++i) {
        // Angles in fp32, as the reference computes them: (float)pos · inv_freq.
        const float angle = static_cast<float>(pos[n]) * inv_freq[i];
        const float c = std::cos(angle), s = direction * std::sin(angle);
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

}  // namespace

void rope_forward(float* x, const int* pos, const float* inv_freq, int N, int heads, int D) {
  rotate(x, pos, inv_freq, N, heads, D, 1.0f);
}

void rope_backward(float* dx, const int* pos, const float* inv_freq, int N, int heads, int D) {
  rotate(dx, pos, inv_freq, N, heads, D, -1.0f);
}

}  // namespace loratune::ops
