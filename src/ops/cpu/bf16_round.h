// fp32 ↔ bf16 conversion of whole arrays for the bf16 matrix kernels and the bf16 store of
// activations: rounding with AVX512-BF16's conversion instruction where the CPU has it (chosen
// at run time) and AVX2 elsewhere; widening is exact.
#pragma once

#include <cstdint>

namespace loratune::ops {

// dst[n] = src[n] rounded to nearest even, as float_to_bf16 does (the AVX512-BF16 path also
// flushes subnormals to zero, as AMX and vdpbf16ps read them anyway).
void round_to_bf16(uint16_t* dst, const float* src, long n);
// src[n] rounded to bf16 into the calling thread's buffer (grown to the largest call, then
// reused), valid until the thread's next call: the input of a bf16 product.
const uint16_t* bf16_copy(const float* src, long n);
// dst[n] = src[n] rounded to bf16 and widened back to fp32 (the emulated bf16 kernels' input).
void round_to_bf16_precision(float* dst, const float* src, long n);
// src[n] so rounded into the calling thread's buffer, as bf16_copy keeps its copy: the input
// of a bf16 product that multiplies in fp32.
const float* bf16_precision_copy(const float* src, long n);
// dst[n] = the bf16 values at src widened to fp32; src may have any alignment (a file's bytes).
void widen_bf16(float* dst, const void* src, long n);

}  // namespace loratune::ops
