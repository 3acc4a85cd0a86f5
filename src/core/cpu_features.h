// What the running CPU can do, read once from cpuid (and the OS's saved-state mask, so that
// an AVX-512 or AMX unit the kernel does not enable counts as absent). LORATUNE_MAX_ISA in the
// environment hides what is above a level, so that one machine runs (and tests) the code of
// smaller CPUs: avx2 hides AVX-512 and AMX (as on AMD Zen 3), avx512 hides AVX512-BF16 and
// AMX (as on Intel Xeons from Skylake-SP to Ice Lake), avx512_bf16 hides AMX (as on Xeons
// without it, or AMD Zen 4/5). oneDNN's JIT is capped alike; any other value is a UsageError.
#pragma once

#include <string>

namespace loratune {

struct CpuFeatures {
  std::string model;  // the brand string, "Intel(R) Xeon(R) Processor"
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512_bf16 = false;
  bool amx_tile = false, amx_bf16 = false;
  std::string cap;  // the LORATUNE_MAX_ISA in force ("avx2", "avx512", "avx512_bf16"), or ""

  // AVX-512 F, BW and VL: what oneDNN's AVX-512 kernels need.
  bool avx512() const { return avx512f && avx512bw && avx512vl; }
  // bf16 arithmetic in hardware: AVX512-BF16 dot products or AMX tiles.
  bool bf16() const { return (avx512() && avx512_bf16) || amx_bf16; }
  // "avx2 fma f16c avx512f avx512bw avx512vl avx512_bf16 amx_tile amx_bf16", those present.
  std::string flags() const;
};

const CpuFeatures& cpu_features();

}  // namespace loratune
