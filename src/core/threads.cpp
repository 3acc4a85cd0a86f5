#include "core/threads.h"

#include <cblas.h>
#include <omp.h>

namespace loratune {

void set_num_threads(int n) {
  // BLAS only multiplies attention blocks and LoRA factors: small products, most of them
  // inside our own parallel loops, where a threaded OpenBLAS ran ten times slower.
  openblas_set_num_threads(1);
  if (n > 0) omp_set_num_threads(n);
}

int num_threads() {
  return omp_get_max_threads();
}

}  // namespace loratune
