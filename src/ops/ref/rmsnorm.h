// Scalar reference of RMSNorm (ops.h), templated on the element type. Shapes: N tokens,
// C hidden.
#pragma once

#include <cmath>

namespace loratune::ref {

// y[N, C] = x · rsqrt(mean(x²) + eps) · w; rstd[N] saved for the backward (may be null)
template <typename T>
void rmsnorm_forward(T* y, T* rstd, const T* x, const T* w, int N, int C, T eps) {
  for (int n = 0; n < N; ++n) {
    T ss = 0;
    for (int c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    T r = T(1) / std::sqrt(ss / T(C) + eps);
    if (rstd) rstd[n] = r;
    for (int c = 0; c < C; ++c) y[n * C + c] = x[n * C + c] * r * w[c];
  }
}

// dx[N, C] += ∂/∂x of the above for frozen w: with g = dy·w,
// dx = rstd·g − rstd³·x·mean(g·x) (∂rstd/∂x = −rstd³·x/C, eps included in rstd).
template <typename T>
void rmsnorm_backward(T* dx, const T* dy, const T* rstd, const T* x, const T* w, int N, int C) {
  for (int n = 0; n < N; ++n) {
    const T r = rstd[n];
    T dot = 0;
    for (int c = 0; c < C; ++c) dot += dy[n * C + c] * w[c] * x[n * C + c];
    for (int c = 0; c < C; ++c)
      dx[n * C + c] += r * dy[n * C + c] * w[c] - r * r * r * x[n * C + c] * dot / T(C);
  }
}

}  // namespace loratune::ref
