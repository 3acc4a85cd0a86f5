#include "ops/packed_weight.h"

#include <sys/mman.h>

#include <new>

namespace loratune::ops {

PackedWeight::PackedWeight(const float* w, int out, int in) : in_(in), out_(out) {
  const size_t floats = static_cast<size_t>(blocks()) * in * kWidth;
  // Big weights go on 2 MB boundaries so the kernel can back them with huge pages (fewer TLB
  // misses when the input gradient walks down a block column); small ones on cache lines.
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = floats * sizeof(float) >= kHuge ? kHuge : 64;
  const size_t bytes = (floats * sizeof(float) + align - 1) / align * align;
  float* p = static_cast<float*>(std::aligned_alloc(align, bytes));
  if (!p) throw std::bad_alloc();
  data_.reset(p);
  if (align == kHuge) madvise(p, bytes, MADV_HUGEPAGE);  // advisory: ignored where off
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks(); ++b) {
    float* dst = p + static_cast<size_t>(b) * in * kWidth;
    for (int j = 0; j < kWidth; ++j) {
      const int o = b * kWidth + j;
      const float* row = w + static_cast<size_t>(o) * in;
      for (int i = 0; i < in; ++i)
        dst[static_cast<size_t>(i) * kWidth + j] = o < out ? row[i] : 0.0f;
    }
  }
}

}  // namespace loratune::ops
