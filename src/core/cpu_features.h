// What the running CPU can do, read once from cpuid (and the OS's saved-state mask, so that
// an AVX-512 or AMX unit the kernel does not enable counts as absent). LORATUNE_MAX_ISA=avx2
// in the environment hides AVX-512 and AMX: the program then runs as on an AVX2-only CPU
// (to test that path, or to compare kernels on one machine); any other value is a UsageError.
#pragma once

#include <string>

namespace loratune {

struct CpuFeatures {
  std::string model;  // the brand string, "Intel(R) Xeon(R) Processor"
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512_bf16 = false;
  bool amx_tile = false, amx_bf16 = false;
  bool capped_to_avx2 = false;  // LORATUNE_MAX_ISA=avx2 hid what is above AVX2

  // AVX-512 F, BW and VL: what oneDNN's AVX-512 kernels need.
  bool avx512() const { return avx512f && avx512bw && avx512vl; }
  // bf16 arithmetic in hardware: AVX512-BF16 dot products or AMX tiles.
  bool bf16() const { return (avx512() && avx512_bf16) || amx_bf16; }
  // "avx2 fma f16c avx512f avx512bw avx512vl avx512_bf16 amx_tile amx_bf16", those present.
  std::string flags() const;
};

const CpuFeatures& cpu_features();

}  // namespace loratune
