// Scalar reference of causal grouped-query attention (ops.h) for one sequence at a time,
// templated on the element type. Shapes: Nq queries, H/Hkv heads, D head dim; query head h
// reads kv head h / (H / Hkv); scale 1/sqrt(D).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace loratune::ref {

// q[Nq, H·D] are queries at positions past..past+Nq−1; k, v [past+Nq, Hkv·D] are the
// sequence's keys and values from position 0. out[Nq, H·D]; lse[Nq, H] (may be null) is
// each row's log-sum-exp of the scaled scores. window > 0: the query at position i sees only
// keys i−window+1..i.
template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, int Nq, int past, int H,
                       int Hkv, int D, int window = 0) {
  const int group = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  std::vector<T> p(past + Nq);
  for (int i = 0; i < Nq; ++i)
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      const int n_keys = past + i + 1;
      const int lo = window > 0 ? std::max(0, n_keys - window) : 0;
      T max_s = -std::numeric_limits<T>::infinity();
      for (int j = lo; j < n_keys; ++j) {
        T s = 0;
        for (int d = 0; d < D; ++d) s += q[(i * H + h) * D + d] * k[(j * Hkv + g) * D + d];
        p[j] = s * scale;
        max_s = std::max(max_s, p[j]);
      }
      T sum = 0;
      for (int j = lo; j < n_keys; ++j) sum += (p[j] = std::exp(p[j] - max_s));
      if (lse) lse[i * H + h] = max_s + std::log(sum);
      for (int d = 0; d < D; ++d) {
        T acc = 0;
        for (int j = lo; j < n_keys; ++j) acc += p[j] * v[(j * Hkv + g) * D + d];
        out[(i * H + h) * D + d] = acc / sum;
      }
    }
}

template <typename T>
void attention_forward(T* out, const T* q, const T* k, const T* v, int Nq, int past, int H, int Hkv,
                       int D, int window = 0) {
  attention_forward(out, static_cast<T*>(nullptr), q, k, v, Nq, past, H, Hkv, D, window);
}

// Backward of the above: writes dq [Nq, H·D], dk and dv [past+Nq, Hkv·D] from dout [Nq, H·D],
// recomputing the probabilities. With P = softmax(S), S = scale·Q·Kᵀ (causal):
// dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ∘ (dP − rowsum(P ∘ dP)), dQ = scale·dS·K, dK = scale·dSᵀ·Q.
// The query heads of a group all add into their kv head's dk/dv.
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        int Nq, int past, int H, int Hkv, int D, int window = 0) {
  const int group = H / Hkv;
  const int n_all = past + Nq;
  const T scale = T(1) / std::sqrt(T(D));
  std::fill(dq, dq + static_cast<long>(Nq) * H * D, T(0));
  std::fill(dk, dk + static_cast<long>(n_all) * Hkv * D, T(0));
  std::fill(dv, dv + static_cast<long>(n_all) * Hkv * D, T(0));
  std::vector<T> p(n_all), dp(n_all);
  for (int i = 0; i < Nq; ++i)
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      const int n_keys = past + i + 1;
      const int lo = window > 0 ? std::max(0, n_keys - window) : 0;
      const T* qi = q + (i * H + h) * D;
      const T* doi = dout + (i * H + h) * D;
      T max_s = -std::numeric_limits<T>::infinity();
      for (int j = lo; j < n_keys; ++j) {
        T s = 0;
        for (int d = 0; d < D; ++d) s += qi[d] * k[(j * Hkv + g) * D + d];
        p[j] = s * scale;
        max_s = std::max(max_s, p[j]);
      }
      T sum = 0;
      for (int j = lo; j < n_keys; ++j) sum += (p[j] = std::exp(p[j] - max_s));
      for (int j = lo; j < n_keys; ++j) p[j] /= sum;
      T rowdot = 0;  // Σ_j P·dP = dO·O
      for (int j = lo; j < n_keys; ++j) {
        T acc = 0;
        for (int d = 0; d < D; ++d) acc += doi[d] * v[(j * Hkv + g) * D + d];
        dp[j] = acc;
        rowdot += p[j] * acc;
      }
      for (int j = lo; j < n_keys; ++j) {
        const T ds = p[j] * (dp[j] - rowdot) * scale;
        for (int d = 0; d < D; ++d) {
          dv[(j * Hkv + g) * D + d] += p[j] * doi[d];
          dq[(i * H + h) * D + d] += ds * k[(j * Hkv + g) * D + d];
          dk[(j * Hkv + g) * D + d] += ds * qi[d];
        }
      }
    }
}

}  // namespace loratune::ref
