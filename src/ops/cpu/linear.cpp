#include <cblas.h>

#include <cstring>

#include "ops/ops.h"

namespace loratune::ops {

void linear_forward(float* y, const float* x, const float* w, const float* b, int N, int in,
                    int out) {
  float beta = 0.0f;
  if (b) {
    for (int n = 0; n < N; ++n) std::memcpy(y + static_cast<long>(n) * out, b, out * sizeof(float));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, w, in, beta, y,
              out);
}

void linear_accumulate(float* y, const float* x, const float* w, int N, int in, int out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, w, in, 1.0f, y,
              out);
}

}  // namespace loratune::ops
