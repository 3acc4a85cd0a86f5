// How fast this CPU multiplies in bf16 against fp32, measured once at first use: one thread runs
// a few hundred thousand independent vdpbf16ps (64 flops each, AVX512-BF16) and as many fp32
// FMAs on 16 lanes (32 flops each), best of several passes, well under a millisecond each.
// AMD Zen 4/5 run vdpbf16ps at the FMA's rate, twice its flops; Intel Xeons run it at half
// the rate, the same flops, and there oneDNN's bf16 matmul reached half its fp32 one
// (docs/performance.md). The backend (ops/backend.h) picks the faster arithmetic from this.
#pragma once

namespace loratune {

struct Bf16DotRate {
  double dot_gflops = 0.0;  // vdpbf16ps on one thread; 0 without AVX512-BF16
  double fma_gflops = 0.0;  // fp32 FMA on one thread, on AVX-512 registers; 0 without AVX-512
  // Whether bf16 dot products multiply faster than fp32 FMAs.
  bool dot_outruns_fma() const { return dot_gflops > fma_gflops; }
};

const Bf16DotRate& bf16_dot_rate();

}  // namespace loratune
