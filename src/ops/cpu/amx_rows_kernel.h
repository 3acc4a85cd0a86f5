// Row-invariant bf16 products for generation on CPUs with AMX: the contract of
// bf16_groups_forward (bf16_groups_kernel.h) on the tile unit. The weight rows stay as they are and
// go into the tiles' A operand (16 outputs × 32 inputs); the call's few input rows are packed
// into the B operand's pair-interleaved layout, so c is computed transposed, 16 outputs × 16
// rows per tile. Every output of every row is the same chain of tile steps over K in steps of
// 32 whatever N (rows past N are zeros in their own columns), so a row's values do not depend
// on the other rows. The weights are read once per 32 rows: decode streams them once.
#pragma once

#include <cstdint>

namespace loratune::ops {

// Whether this CPU runs the kernel (AMX-BF16, and Linux lets this process use the tile data).
bool amx_rows_kernel_available();

void amx_rows_forward(void* c, bool c_bf16, const uint16_t* a, long lda, const uint16_t* w, int N,
                      int K, int out, bool accumulate);

}  // namespace loratune::ops
