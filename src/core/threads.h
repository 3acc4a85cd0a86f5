// The thread count of the OpenMP loops; OpenBLAS (on the same OpenMP runtime) is kept to one
// thread, called from inside those loops.
#pragma once

namespace loratune {

// n <= 0 keeps the current count (at start: all cores, or OMP_NUM_THREADS).
void set_num_threads(int n);
int num_threads();

}  // namespace loratune
