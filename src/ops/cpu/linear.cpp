#include <cblas.h>

#include <cstring>

#include "ops/ops.h"

namespace loratune::ops {

namespace {

// sgemm packs the weight matrix on every call, which dominates when only a few rows
// multiply it (decoding); matrix-vector products stream the weights once per row instead.
constexpr int kGemvRows = 4;

void gemv_rows(float* y, const float* x, const float* w, int N, int in, int out, float beta) {
  for (int n = 0; n < N; ++n)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, w, in, x + static_cast<long>(n) * in, 1,
                beta, y + static_cast<long>(n) * out, 1);
}

}  // namespace

void linear_forward(float* y, const float* x, const float* w, const float* b, int N, int in,
                    int out) {
  float beta = 0.0f;
  if (b) {
    for (int n = 0; n < N; ++n) std::memcpy(y + static_cast<long>(n) * out, b, out * sizeof(float));
    beta = 1.0f;
  }
  if (N < kGemvRows) return gemv_rows(y, x, w, N, in, out, beta);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, w, in, beta, y,
              out);
}

void linear_accumulate(float* y, const float* x, const float* w, int N, int in, int out) {
  if (N < kGemvRows) return gemv_rows(y, x, w, N, in, out, 1.0f);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, w, in, 1.0f, y,
              out);
}

void linear_backward(float* dx, const float* dy, const float* w, int N, int in, int out,
                     bool accumulate) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out, 1.0f, dy, out, w, in,
              accumulate ? 1.0f : 0.0f, dx, in);
}

void lora_forward(float* y, float* u, const float* x, const float* A, const float* B, float scale,
                  int N, int in, int out, int r) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, in, 1.0f, x, in, A, in, 0.0f, u, r);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, r, scale, u, r, B, r, 1.0f, y, out);
}

void lora_backward(float* dx, float* dA, float* dB, float* du, const float* dy, const float* u,
                   const float* x, const float* A, const float* B, float scale, int N, int in,
                   int out, int r) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, N, scale, dy, out, u, r, 1.0f, dB,
              r);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, r, out, scale, dy, out, B, r, 0.0f, du,
              r);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, N, 1.0f, du, r, x, in, 1.0f, dA, in);
  if (dx)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, r, 1.0f, du, r, A, in, 1.0f, dx,
                in);
}

}  // namespace loratune::ops
