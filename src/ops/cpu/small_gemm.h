// fp32 products, row-major as cblas_sgemm: C[M, N] = alpha · op(A) · op(B) + beta · C.
//
// sgemm: oneDNN's sgemm, which JITs for the running CPU. On AVX-512 CPUs it was the faster
// (the LoRA branches' thin products, r = 8, about 2x OpenBLAS's AVX-512 kernels; attention's
// blocks, before their own tiles, about 1.4x); at AVX2 it ran as OpenBLAS's Haswell kernels.
// Debian's OpenBLAS 0.3.21 runs its generic SSE3 kernels on CPUs newer than it knows (Xeon family 6
// model 207: "Prescott", 3.5x slower there), so it serves the bench as a peer only.
//
// row_sgemm: one row times a matrix on the calling thread (decode's query against its keys, the
// LoRA branches' rows), own AVX2 loops, as BLAS's per-call cost outweighed
// the work by several times. Attention's blocks of rows have their own products
// (ops/cpu/attention_products.h).
#pragma once

namespace loratune::ops {

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// c[N] = alpha · a·op(B) (+ c when beta is 1; beta is 0 or 1) for the row a[K]: B is [K, N], or
// [N, K] with trans_b, row-major, rows ldb apart.
void row_sgemm(bool trans_b, int N, int K, float alpha, const float* a, const float* B, int ldb,
               float beta, float* c);

}  // namespace loratune::ops
