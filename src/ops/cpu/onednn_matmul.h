// The products with a frozen weight held as rows (kRowsF32, kRowsBF16, kRowsBF16Widened)
// through oneDNN's matmul: one primitive per weight shape, direction and accumulation, created
// on first use with the row count left to run time, then reused; its scratchpad is ours, grown
// once. bf16 weights take their input rounded to bf16 (to nearest even) and accumulate in fp32;
// kRowsBF16Widened's are widened to fp32 a slice of rows at a time for the fp32 matmul.
#pragma once

#include "ops/packed_weight.h"

namespace loratune::ops::onednn {

// One product of a forward call: y[N, out] (+)= x · wᵀ.
struct Product {
  float* y;
  const PackedWeight* w;
  bool accumulate;
};
// The products of one input x[N, in] (q/k/v, gate/up), x rounded to bf16 once for all.
void forward(const Product* ps, int n, const float* x, int N);
// The products of one input written rounded to bf16, for bf16 rows: y = x · wᵀ.
struct ProductBF16 {
  uint16_t* y;
  const PackedWeight* w;
};
void forward_to_bf16(const ProductBF16* ps, int n, const float* x, int N);
// dx[N, in] (+)= dy[N, out] · w
void backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate);
// The same with dy already in bf16, for bf16 rows, dy's rows ld_dy values apart.
void backward_bf16(float* dx, const uint16_t* dy, long ld_dy, const PackedWeight& w, int N,
                   bool accumulate);

}  // namespace loratune::ops::onednn
