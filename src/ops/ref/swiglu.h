// Scalar reference of the SwiGLU activation (ops.h), templated on the element type.
#pragma once

#include <cmath>

namespace loratune::ref {

// h[n] = silu(gate[n]) · up[n]
template <typename T>
void swiglu_forward(T* h, const T* gate, const T* up, long n) {
  for (long i = 0; i < n; ++i) h[i] = gate[i] / (T(1) + std::exp(-gate[i])) * up[i];
}

// dgate = dh · up · σ(g)·(1 + g·(1 − σ(g))), dup = dh · silu(g) (written; elementwise, so
// the outputs may alias the inputs).
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dh, const T* gate, const T* up, long n) {
  for (long i = 0; i < n; ++i) {
    const T g = gate[i], u = up[i], d = dh[i];
    const T sig = T(1) / (T(1) + std::exp(-g));
    dup[i] = d * g * sig;
    dgate[i] = d * u * sig * (T(1) + g * (T(1) - sig));
  }
}

}  // namespace loratune::ref
