// The products with a frozen weight held as rows (kRowsF32, kRowsBF16) through oneDNN's
// matmul: one primitive per weight shape, direction and accumulation, created on first use
// with the row count left to run time, then reused; its scratchpad is ours, grown once.
// bf16 weights take their input rounded to bf16 (to nearest even) and accumulate in fp32.
#pragma once

#include "ops/packed_weight.h"

namespace loratune::ops::onednn {

// y[N, out] (+)= x[N, in] · wᵀ
void forward(float* y, const float* x, const PackedWeight& w, int N, bool accumulate);
// dx[N, in] (+)= dy[N, out] · w
void backward(float* dx, const float* dy, const PackedWeight& w, int N, bool accumulate);

}  // namespace loratune::ops::onednn
