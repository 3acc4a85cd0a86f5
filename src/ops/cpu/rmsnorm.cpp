#include <cmath>

#include "core/threads.h"
#include "ops/ops.h"

namespace loratune::ops {

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int N, int C,
                     float eps) {
  parallel_ranges(N, 2, [&](long begin, long end) {
    for (long n = begin; n < end; ++n) {
      const float* xr = x + n * C;
      float* yr = y + n * C;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
      const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
      if (rstd) rstd[n] = r;
#pragma omp simd
      for (int c = 0; c < C; ++c) yr[c] = xr[c] * r * w[c];
    }
  });
}

}  // namespace loratune::ops

namespace loratune::ops {

void rmsnorm_backward(float* dx, const float* dy, const float* rstd, const float* x, const float* w,
                      int N, int C) {
  parallel_ranges(N, 2, [&](long begin, long end) {
    for (long n = begin; n < end; ++n) {
      const float* xr = x + n * C;
      const float* dyr = dy + n * C;
      float* dxr = dx + n * C;
      const float r = rstd[n];
      float dot = 0.0f;  // Σ g·x with g = dy·w
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; ++c) dot += dyr[c] * w[c] * xr[c];
      const float k = r * r * r * dot / static_cast<float>(C);
#pragma omp simd
      for (int c = 0; c < C; ++c) dxr[c] += r * dyr[c] * w[c] - k * xr[c];
    }
  });
}

}  // namespace loratune::ops
