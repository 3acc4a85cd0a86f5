#include <cblas.h>

#include <cstring>

#include "ops/ops.h"

namespace loratune::ops {

namespace {

// sgemm packs the weight matrix on every call, which dominates when only a few rows
// multiply it (decoding). Then each weight row is streamed once from memory and dotted with
// every input row while it is in cache: the speed is the memory bandwidth's.
constexpr int kGemvRows = 4;

float with_beta(float y, float beta, float sum) {
  return beta == 0.0f ? sum : beta * y + sum;
}

// y[o] = beta·y[o] + x·w[o] for output rows o0..o0+3: four dot products at once keep four
// independent FMA chains in flight.
void dot4(float* y, const float* x, const float* w, int in, int o0, float beta) {
  const float *w0 = w + static_cast<long>(o0) * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int i = 0; i < in; ++i) {
    s0 += x[i] * w0[i];
    s1 += x[i] * w1[i];
    s2 += x[i] * w2[i];
    s3 += x[i] * w3[i];
  }
  const float sums[4] = {s0, s1, s2, s3};
  for (int j = 0; j < 4; ++j) y[o0 + j] = with_beta(y[o0 + j], beta, sums[j]);
}

void gemv_rows(float* y, const float* x, const float* w, int N, int in, int out, float beta) {
  const int blocks = out / 4;
#pragma omp parallel for schedule(static) if (static_cast <long>(in) * out > 65536)
  for (int b = 0; b < blocks; ++b)
    for (int n = 0; n < N; ++n)
      dot4(y + static_cast<long>(n) * out, x + static_cast<long>(n) * in, w, in, 4 * b, beta);
  for (int o = 4 * blocks; o < out; ++o)  // the last out % 4 rows
    for (int n = 0; n < N; ++n) {
      const float* xn = x + static_cast<long>(n) * in;
      const float* wo = w + static_cast<long>(o) * in;
      float sum = 0.0f;
      for (int i = 0; i < in; ++i) sum += xn[i] * wo[i];
      float& yo = y[static_cast<long>(n) * out + o];
      yo = with_beta(yo, beta, sum);
    }
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
