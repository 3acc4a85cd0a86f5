// Scalar reference of the fused lm_head + softmax + cross-entropy (ops.h), templated on the
// element type; the reference materialises each row's logits, the fast kernel chunks them.
// Shapes: R rows, C hidden, V vocab.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace loratune::ref {

// Σ over rows of −log softmax(h[r] · wᵀ)[targets[r]], for h[R, C], w[V, C], and
// dh[R, C] = grad_scale · (softmax − onehot(target)) · w (written; skipped when dh is null).
// Where `rounding` is given, each logit and each logit gradient pass through it (the bf16
// kernels round both to bf16).
template <typename T>
double cross_entropy_forward_backward(T* dh, const T* h, const T* w, const int* targets, int R,
                                      int C, int V, T grad_scale, T (*rounding)(T) = nullptr) {
  auto rounded = [&](T x) { return rounding ? rounding(x) : x; };
  std::vector<T> logits(V);
  double loss = 0;
  for (int r = 0; r < R; ++r) {
    T max_l = -std::numeric_limits<T>::infinity();
    for (int j = 0; j < V; ++j) {
      T acc = 0;
      for (int c = 0; c < C; ++c) acc += h[r * C + c] * w[j * C + c];
      logits[j] = rounded(acc);
      max_l = std::max(max_l, logits[j]);
    }
    double sum = 0;
    for (int j = 0; j < V; ++j) sum += std::exp(static_cast<double>(logits[j] - max_l));
    loss += std::log(sum) - static_cast<double>(logits[targets[r]] - max_l);
    if (!dh) continue;
    // dlogits = grad_scale · (p − onehot), then dh = dlogits · w
    for (int j = 0; j < V; ++j)
      logits[j] =
          static_cast<T>(std::exp(static_cast<double>(logits[j] - max_l)) / sum) * grad_scale;
    logits[targets[r]] -= grad_scale;
    for (int j = 0; j < V; ++j) logits[j] = rounded(logits[j]);
    for (int c = 0; c < C; ++c) {
      T acc = 0;
      for (int j = 0; j < V; ++j) acc += logits[j] * w[j * C + c];
      dh[r * C + c] = acc;
    }
  }
  return loss;
}

// The loss alone.
template <typename T>
double cross_entropy_forward(const T* h, const T* w, const int* targets, int R, int C, int V) {
  return cross_entropy_forward_backward(static_cast<T*>(nullptr), h, w, targets, R, C, V, T(0));
}

}  // namespace loratune::ref
