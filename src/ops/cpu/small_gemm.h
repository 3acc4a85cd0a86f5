// The small fp32 products inside attention (blocks of 64 query rows against their keys), one
// per task of a parallel loop: oneDNN's sgemm on CPUs with AVX-512 (about 1.4x OpenBLAS's on
// those blocks there, one thread each), OpenBLAS elsewhere, and a single row (decode) through
// own AVX2 loops. Row-major, as cblas_sgemm: C[M, N] = alpha · op(A) · op(B) + beta · C.
#pragma once

namespace loratune::ops {

void small_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc);

}  // namespace loratune::ops
