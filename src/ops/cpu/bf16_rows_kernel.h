// Row-invariant bf16 products for generation on CPUs with AVX512-BF16: c[N, out] (+)= a[N, K]
// · wᵀ, w the bf16 rows [out, K] of a kRowsBF16 weight, a the bf16-rounded input, fp32
// accumulation (vdpbf16ps). Each output of each row is one chain over K in steps of 32 and one
// fixed reduction whatever N, so a row's values do not depend on the other rows (oneDNN's
// kernels round one row otherwise than several). The weights are read from memory once per
// call (outputs outer, rows inner): a few rows cost little more than one, as decode needs.
#pragma once

#include <cstdint>

namespace loratune::ops {

// Whether this CPU runs the kernel (AVX-512 with AVX512-BF16).
bool bf16_rows_kernel_available();

// c has rows `out` apart: fp32, or with c_bf16 bf16 rounded to nearest even (then
// accumulate must be false). a has rows lda apart.
void bf16_rows_forward(void* c, bool c_bf16, const uint16_t* a, long lda, const uint16_t* w, int N,
                       int K, int out, bool accumulate);

// The row-invariant bf16 kernel generation takes on this CPU, the faster first: the AMX one
// (amx_rows_kernel.h), then this one; both null where the CPU runs neither.
struct RowsKernelBF16 {
  const char* name;  // as the bench prints it: "own-amx-bf16", "own-avx512bf16"
  decltype(&bf16_rows_forward) forward;
};
const RowsKernelBF16& rows_kernel_bf16();

}  // namespace loratune::ops
