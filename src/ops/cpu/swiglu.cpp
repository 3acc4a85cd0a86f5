#include <cmath>

#include "ops/ops.h"

namespace loratune::ops {

void swiglu_forward(float* h, const float* gate, const float* up, long n) {
#pragma omp parallel for simd schedule(static) if (n > 4096)
  for (long i = 0; i < n; ++i) h[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace loratune::ops
