#include "ops/cpu/fast_exp.h"
#include "ops/ops.h"

namespace loratune::ops {

void swiglu_forward(float* h, const float* gate, const float* up, long n) {
#pragma omp parallel for simd schedule(static) if (n > 4096)
  for (long i = 0; i < n; ++i) h[i] = gate[i] / (1.0f + fast_exp(-gate[i])) * up[i];
}

void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up,
                     long n) {
#pragma omp parallel for simd schedule(static) if (n > 4096)
  for (long i = 0; i < n; ++i) {
    const float g = gate[i], u = up[i], d = dh[i];
    const float sig = 1.0f / (1.0f + fast_exp(-g));
    dup[i] = d * g * sig;
    dgate[i] = d * u * sig * (1.0f + g * (1.0f - sig));
  }
}

}  // namespace loratune::ops
