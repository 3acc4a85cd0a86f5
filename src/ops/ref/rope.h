// Scalar reference of rotary position embeddings (ops.h), templated on the element type;
// the frequencies are computed in T from θ. Shapes: N tokens, heads, D head dim.
#pragma once

#include <cmath>

namespace loratune::ref {

// In place on x[N, heads·D]; token n has position pos[n]. HF rotate_half layout: pairs
// (i, i + D/2) rotate by angle pos · θ^(−2i/D).
template <typename T>
void rope_forward(T* x, const int* pos, int N, int heads, int D, double theta) {
  const int half = D / 2;
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < heads; ++h) {
      T* v = x + (static_cast<long>(n) * heads + h) * D;
      for (int i = 0; i < half; ++i) {
        T inv_freq = T(1) / std::pow(T(theta), T(2 * i) / T(D));
        T angle = T(pos[n]) * inv_freq;
        T c = std::cos(angle), s = std::sin(angle);
        T a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
}

// In place on dx[N, heads·D]: the rotation is orthogonal, so its gradient is the transpose,
// a rotation by −angle.
template <typename T>
void rope_backward(T* dx, const int* pos, int N, int heads, int D, double theta) {
  const int half = D / 2;
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < heads; ++h) {
      T* v = dx + (static_cast<long>(n) * heads + h) * D;
      for (int i = 0; i < half; ++i) {
        T inv_freq = T(1) / std::pow(T(theta), T(2 * i) / T(D));
        T angle = T(pos[n]) * inv_freq;
        T c = std::cos(angle), s = std::sin(angle);
        T ga = v[i], gb = v[i + half];
        v[i] = ga * c + gb * s;
        v[i + half] = gb * c - ga * s;
      }
    }
}

}  // namespace loratune::ref
