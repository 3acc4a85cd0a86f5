// Scalar references of the linear family (ops.h): plain projections and the LoRA branch,
// templated on the element type (float against the fast kernels, double for finite
// differences). Shapes: N tokens, in/out features, r LoRA rank.
#pragma once

#include "ops/ops.h"

namespace loratune::ref {

// The keep factor (ops::KeepMask) of feature i of row n: 1 without a mask.
template <typename T>
T keep_factor(const ops::KeepMask& keep, int n, int in, int i) {
  return keep.bits ? T(ops::kept_factor(keep.row(n, in), i, keep.scale)) : T(1);
}

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

// dx[N, in] = dy[N, out] · w[out, in] (+= when accumulate). Frozen w: no dw.
template <typename T>
void linear_backward(T* dx, const T* dy, const T* w, int N, int in, int out, bool accumulate) {
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < in; ++i) {
      T acc = 0;
      for (int o = 0; o < out; ++o) acc += dy[n * out + o] * w[o * in + i];
      dx[n * in + i] = accumulate ? dx[n * in + i] + acc : acc;
    }
}

// u[N, r] = keep(x[N, in]) · A[r, in]ᵀ (written); y[N, out] += s · u · B[out, r]ᵀ
template <typename T>
void lora_forward(T* y, T* u, const T* x, const ops::KeepMask& keep, const T* A, const T* B,
                  T scale, int N, int in, int out, int r) {
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < r; ++k) {
      T acc = 0;
      for (int i = 0; i < in; ++i)
        acc += x[n * in + i] * keep_factor<T>(keep, n, in, i) * A[k * in + i];
      u[n * r + k] = acc;
    }
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < out; ++o) {
      T acc = 0;
      for (int k = 0; k < r; ++k) acc += u[n * r + k] * B[o * r + k];
      y[n * out + o] += scale * acc;
    }
}

// dB[out, r] += s · dyᵀ · u; du[N, r] = s · dy · B (written); dA[r, in] += duᵀ · keep(x);
// dx[N, in] += keep(du · A) (skipped when dx is null).
template <typename T>
void lora_backward(T* dx, T* dA, T* dB, T* du, const T* dy, const T* u, const T* x,
                   const ops::KeepMask& keep, const T* A, const T* B, T scale, int N, int in,
                   int out, int r) {
  for (int o = 0; o < out; ++o)
    for (int k = 0; k < r; ++k) {
      T acc = 0;
      for (int n = 0; n < N; ++n) acc += dy[n * out + o] * u[n * r + k];
      dB[o * r + k] += scale * acc;
    }
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < r; ++k) {
      T acc = 0;
      for (int o = 0; o < out; ++o) acc += dy[n * out + o] * B[o * r + k];
      du[n * r + k] = scale * acc;
    }
  for (int k = 0; k < r; ++k)
    for (int i = 0; i < in; ++i) {
      T acc = 0;
      for (int n = 0; n < N; ++n)
        acc += du[n * r + k] * x[n * in + i] * keep_factor<T>(keep, n, in, i);
      dA[k * in + i] += acc;
    }
  if (dx)
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < in; ++i) {
        T acc = 0;
        for (int k = 0; k < r; ++k) acc += du[n * r + k] * A[k * in + i];
        dx[n * in + i] += acc * keep_factor<T>(keep, n, in, i);
      }
}

}  // namespace loratune::ref
