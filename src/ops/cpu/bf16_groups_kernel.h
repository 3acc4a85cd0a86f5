// Row-invariant bf16 products for generation on CPUs with AVX512-BF16: c[N, out] (+)= a[N, K]
// · wᵀ for a kGroupsBF16 weight w[out, K], a the bf16-rounded input, fp32 accumulation
// (vdpbf16ps). Each output of each row is one chain over K in steps of 32 and one fixed
// reduction whatever N, so a row's values do not depend on the other rows (oneDNN's kernels
// round one row otherwise than several). The weights are read from memory once per call
// (groups outer, rows inner) as one stream per thread: a few rows cost little more than one,
// as decode needs.
#pragma once

#include <cstdint>

#include "ops/packed_weight.h"

namespace loratune::ops {

// Whether this CPU runs the kernel (AVX-512 with AVX512-BF16).
bool bf16_groups_kernel_available();

// One product of a call: c (+)= a · wᵀ, c with rows w.out() apart.
struct GroupsProduct {
  void* c;
  const PackedWeight* w;
  bool accumulate;
};
constexpr int kMaxGroupsProducts = 3;  // q, k and v

// The products of one input a[N, K] (rows lda apart) with 1 to 3 weights of K inputs, c fp32
// or with c_bf16 bf16 rounded to nearest even (then accumulate must be false).
void bf16_groups_forward(const GroupsProduct* ps, int n, const uint16_t* a, long lda, int N,
                         bool c_bf16);

}  // namespace loratune::ops
