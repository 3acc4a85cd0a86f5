#include "ops/packed_weight.h"

#include "core/error.h"

#include <sys/mman.h>

#include <new>

namespace loratune::ops {

PackedWeight::PackedWeight(const float* w, int out, int in) : in_(in), out_(out) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
    throw Error("this CPU lacks AVX2 or FMA", "",
                "loratune's matrix kernels need an x86-64-v3 CPU");
  const size_t floats = static_cast<size_t>(blocks()) * block_stride();
  // Big matrices start on a huge page and ask for huge pages (all but the tail, so no memory
  // is wasted): the kernels read a block row by row, a page or more apart, and with 4 KB
  // pages those reads kept missing the TLB. Small ones are cache-line aligned, as the kernels
  // load whole vectors from every block row.
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
  void* p = nullptr;
  if (posix_memalign(&p, bytes >= kHugePage ? kHugePage : 64, bytes) != 0) throw std::bad_alloc();
  data_.reset(static_cast<float*>(p));
  // A hint: where the system has huge pages off, the call fails and nothing changes.
  if (bytes >= kHugePage) madvise(p, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks(); ++b) {
    float* dst = data_.get() + b * block_stride();
    for (int j = 0; j < kWidth; ++j) {
      const int o = b * kWidth + j;
      const float* row = o < out ? w + static_cast<size_t>(o) * in : nullptr;  // null: padding
      for (int i = 0; i < in; ++i) dst[static_cast<size_t>(i) * kWidth + j] = row ? row[i] : 0.0f;
    }
  }
}

void PackedWeight::unpack(float* w) const {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out_; ++o)
    for (int i = 0; i < in_; ++i) w[static_cast<size_t>(o) * in_ + i] = at(o, i);
}

}  // namespace loratune::ops
