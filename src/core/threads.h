// The thread count of the OpenMP loops; OpenBLAS (on the same OpenMP runtime) is kept to one
// thread, called from inside those loops.
#pragma once

#include <omp.h>

namespace loratune {

// n <= 0 keeps the current count (at start: all cores, or OMP_NUM_THREADS).
void set_num_threads(int n);
int num_threads();

// body(begin, end) over [0, n): one contiguous range per thread of the team where n ≥
// min_parallel, else body(0, n) on the calling thread (also inside a parallel region). Small
// inputs enter no OpenMP region at all: libgomp makes futex system calls even for a team of
// one (a region with a false `if` clause), about 1.3 µs on a virtual machine, which decode's
// one-row norms and conversions paid hundreds of times per token.
template <typename Body>
void parallel_ranges(long n, long min_parallel, Body&& body) {
  if (n < min_parallel || n < 2 || omp_in_parallel()) {
    if (n > 0) body(0L, n);
    return;
  }
#pragma omp parallel
  {
    const long t = omp_get_thread_num(), nt = omp_get_num_threads();
    const long begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) body(begin, end);
  }
}

}  // namespace loratune
