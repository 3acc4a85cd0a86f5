#include <cmath>

#include "ops/ops.h"

namespace loratune::ops {

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int N, int C,
                     float eps) {
#pragma omp parallel for schedule(static) if (N > 1)
  for (int n = 0; n < N; ++n) {
    const float* xr = x + static_cast<long>(n) * C;
    float* yr = y + static_cast<long>(n) * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
    if (rstd) rstd[n] = r;
#pragma omp simd
    for (int c = 0; c < C; ++c) yr[c] = xr[c] * r * w[c];
  }
}

}  // namespace loratune::ops
