// One thread count for OpenMP loops and OpenBLAS (built on the same OpenMP runtime).
#pragma once

namespace loratune {

// n <= 0 keeps the default (all cores).
void set_num_threads(int n);
int num_threads();

}  // namespace loratune
