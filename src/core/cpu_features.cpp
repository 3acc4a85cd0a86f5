#include "core/cpu_features.h"

#include <cpuid.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"

namespace loratune {

namespace {

struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
  return r;
}

bool bit(unsigned reg, int n) {
  return (reg >> n) & 1u;
}

// The state components the OS saves on a context switch (XCR0); zero without OSXSAVE.
uint64_t os_saved_state(const Regs& leaf1) {
  if (!bit(leaf1.c, 27)) return 0;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

CpuFeatures detect() {
  CpuFeatures f;
  const unsigned max_leaf = cpuid(0).a;
  if (max_leaf < 7) return f;
  const Regs l1 = cpuid(1), l7 = cpuid(7), l7_1 = cpuid(7, 1);
  const uint64_t xcr0 = os_saved_state(l1);
  const bool ymm = (xcr0 & 0x6) == 0x6;            // SSE and AVX state
  const bool zmm = ymm && (xcr0 & 0xe0) == 0xe0;   // opmask and both ZMM halves
  const bool tiles = (xcr0 & 0x60000) == 0x60000;  // XTILECFG and XTILEDATA
  f.avx2 = ymm && bit(l7.b, 5);
  f.fma = ymm && bit(l1.c, 12);
  f.f16c = ymm && bit(l1.c, 29);
  f.avx512f = zmm && bit(l7.b, 16);
  f.avx512bw = zmm && bit(l7.b, 30);
  f.avx512vl = zmm && bit(l7.b, 31);
  f.avx512_bf16 = zmm && bit(l7_1.a, 5);
  f.amx_tile = tiles && bit(l7.d, 24);
  f.amx_bf16 = f.amx_tile && bit(l7.d, 22);
  if (cpuid(0x80000000).a >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002 + i);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    f.model = brand;
    const size_t first = f.model.find_first_not_of(' '), last = f.model.find_last_not_of(' ');
    f.model = first == std::string::npos ? "" : f.model.substr(first, last - first + 1);
  }
  return f;
}

}  // namespace

std::string CpuFeatures::flags() const {
  const std::pair<bool, const char*> all[] = {{avx2, "avx2"},
                                              {fma, "fma"},
                                              {f16c, "f16c"},
                                              {avx512f, "avx512f"},
                                              {avx512bw, "avx512bw"},
                                              {avx512vl, "avx512vl"},
                                              {avx512_bf16, "avx512_bf16"},
                                              {amx_tile, "amx_tile"},
                                              {amx_bf16, "amx_bf16"}};
  std::string s;
  for (const auto& [present, name] : all)
    if (present) s += (s.empty() ? "" : " ") + std::string(name);
  return cap.empty() ? s : s + " (capped by LORATUNE_MAX_ISA=" + cap + ")";
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = [] {
    CpuFeatures f = detect();
    const char* cap = std::getenv("LORATUNE_MAX_ISA");
    if (!cap || !*cap) return f;
    f.cap = cap;
    if (f.cap != "avx2" && f.cap != "avx512" && f.cap != "avx512_bf16")
      throw UsageError("unknown LORATUNE_MAX_ISA '" + f.cap + "'", "environment",
                       "the caps are avx2, avx512 and avx512_bf16; unset it for the CPU's own");
    f.amx_tile = f.amx_bf16 = false;
    if (f.cap != "avx512_bf16") f.avx512_bf16 = false;
    if (f.cap == "avx2") f.avx512f = f.avx512bw = f.avx512vl = false;
    return f;
  }();
  return features;
}

}  // namespace loratune
