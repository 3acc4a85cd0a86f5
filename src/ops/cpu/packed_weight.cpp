#include "ops/packed_weight.h"

#include "core/error.h"

#include <new>

namespace loratune::ops {

PackedWeight::PackedWeight(const float* w, int out, int in) : in_(in), out_(out) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
    throw Error("this CPU lacks AVX2 or FMA", "",
                "loratune's matrix kernels need an x86-64-v3 CPU");
  const size_t floats = static_cast<size_t>(blocks()) * block_stride();
  // Cache-line aligned: the kernels load whole vectors from every block row.
  const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  data_.reset(p);
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks(); ++b) {
    float* dst = p + b * block_stride();
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
