#include "ops/packed_weight.h"

#include <new>

namespace loratune::ops {

PackedWeight::PackedWeight(const float* w, int out, int in) : in_(in), out_(out) {
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
      const float* row = w + static_cast<size_t>(o) * in;
      for (int i = 0; i < in; ++i)
        dst[static_cast<size_t>(i) * kWidth + j] = o < out ? row[i] : 0.0f;
    }
  }
}

}  // namespace loratune::ops
