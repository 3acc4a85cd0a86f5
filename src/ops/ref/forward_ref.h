// Plain scalar references of the forward ops, templated on the element type (float for
// comparisons with the fast kernels, double for finite-difference checks). Same argument
// order as the fast kernels in ops/cpu. Shapes: N tokens, C hidden, H/Hkv heads, D head dim.
#pragma once

#include <cmath>
#include <limits>
#include <vector>

namespace loratune::ref {

// y[N, out] = x[N, in] · w[out, in]ᵀ + b[out] (b may be null)
template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* b, int N, int in, int out) {
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < out; ++o) {
      T acc = b ? b[o] : T(0);
      for (int i = 0; i < in; ++i) acc += x[n * in + i] * w[o * in + i];
      y[n * out + o] = acc;
    }
}

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

// Causal attention of one sequence. q[Nq, H·D] are queries at positions past..past+Nq−1;
// k, v [past+Nq, Hkv·D] are that sequence's keys and values from position 0. Query head h
// reads kv head h / (H / Hkv). out[Nq, H·D].
template <typename T>
void attention_forward(T* out, const T* q, const T* k, const T* v, int Nq, int past, int H, int Hkv,
                       int D) {
  const int group = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  std::vector<T> p(past + Nq);
  for (int i = 0; i < Nq; ++i)
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      const int n_keys = past + i + 1;
      T max_s = -std::numeric_limits<T>::infinity();
      for (int j = 0; j < n_keys; ++j) {
        T s = 0;
        for (int d = 0; d < D; ++d) s += q[(i * H + h) * D + d] * k[(j * Hkv + g) * D + d];
        p[j] = s * scale;
        max_s = std::max(max_s, p[j]);
      }
      T sum = 0;
      for (int j = 0; j < n_keys; ++j) sum += (p[j] = std::exp(p[j] - max_s));
      for (int d = 0; d < D; ++d) {
        T acc = 0;
        for (int j = 0; j < n_keys; ++j) acc += p[j] * v[(j * Hkv + g) * D + d];
        out[(i * H + h) * D + d] = acc / sum;
      }
    }
}

// h[n] = silu(gate[n]) · up[n]
template <typename T>
void swiglu_forward(T* h, const T* gate, const T* up, long n) {
  for (long i = 0; i < n; ++i) h[i] = gate[i] / (T(1) + std::exp(-gate[i])) * up[i];
}

}  // namespace loratune::ref
