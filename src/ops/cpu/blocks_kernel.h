// loratune's own matrix kernels for the weights in blocks formats (kBlocksF32, kBlocksBF16,
// kBlocksBF16Widened: ops/packed_weight.h), which no product packs again: the fp32 ones of
// CPUs without AVX-512 and the row-invariant ones of generation on every CPU (the rows of a
// product each get the same value at any row count).
#pragma once

#include "ops/cpu/onednn_matmul.h"
#include "ops/packed_weight.h"

namespace loratune::ops::blocks {

// The most products one forward call takes (q, k and v).
constexpr int kMaxProducts = 3;

// The products of one input x[N, in] (weights of the same `in` and format), x as the kernels
// multiply it (rounded to bf16 for the bf16 formats): y_j (+)= x · w_jᵀ.
void forward(const onednn::Product* ps, int n, const float* x, int N);
// dx[N, in] (+)= dy[N, out] · w, dy as the kernels multiply it; not for kBlocksBF16Widened.
void backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate);

}  // namespace loratune::ops::blocks
