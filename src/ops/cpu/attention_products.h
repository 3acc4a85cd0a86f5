// The fp32 products inside attention's blocks (a block of query rows against its keys), one
// per task of a parallel loop, on the calling thread: register tiles of C, one row of A
// broadcast against vectors of a row of B, AVX-512 or AVX2 as the CPU has. Beside a BLAS call
// they cost nothing per call, take A or Aᵀ through strides, and skip the causal zeros: a tile
// of rows reads only the k (and writes only the columns) that its rows can see.
#pragma once

namespace loratune::ops {

// C[M, N] = alpha · A·B, or C += alpha · A·B with `accumulate`. A(i, k) = a[i·a_row + k·a_col]
// (A row-major: a_row = lda, a_col = 1; Aᵀ row-major: a_row = 1, a_col = lda); B row-major
// [K, N]. Causal bands, for a tile of rows i0..i1: it sums only k in [i0 + k_from, i1 + k_to]
// (A is zero elsewhere in those rows, or the sum is to skip it) and writes only the column
// vectors that reach columns up to i1 + n_to (row i's later columns are left as they were).
struct BandProduct {
  static constexpr int kAll = 1 << 29;  // no band
  int M, N, K;
  float alpha;
  const float* a;
  long a_row, a_col;
  const float* b;
  long ldb;
  float* c;
  long ldc;
  bool accumulate = false;
  int k_from = -kAll, k_to = kAll, n_to = kAll;
};

void band_product(const BandProduct& p);

}  // namespace loratune::ops
