#include "ops/cpu/small_gemm.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include "core/cpu_features.h"

namespace loratune::ops {

void small_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  static const bool onednn = cpu_features().avx512();
  if (onednn && dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                           beta, C, ldc) == dnnl_success)
    return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace loratune::ops
