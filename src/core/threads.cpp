#include "core/threads.h"

#include <cblas.h>
#include <omp.h>

namespace loratune {

void set_num_threads(int n) {
  // Read the count first: OpenBLAS's OpenMP build sets OpenMP's own count along with its own,
  // which left every command without --threads on a single thread.
  const int threads = n > 0 ? n : omp_get_max_threads();
  // BLAS only multiplies attention blocks and LoRA factors: small products, most of them
  // inside our own parallel loops, where a threaded OpenBLAS ran ten times slower.
  openblas_set_num_threads(1);
  omp_set_num_threads(threads);
}

int num_threads() {
  return omp_get_max_threads();
}

}  // namespace loratune
