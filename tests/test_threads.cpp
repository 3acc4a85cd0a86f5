#include <cblas.h>
#include <gtest/gtest.h>
#include <omp.h>

#include "core/threads.h"

namespace loratune {
namespace {

// OpenBLAS's OpenMP build sets OpenMP's thread count along with its own: keeping BLAS on one
// thread must not take the count that n <= 0 keeps (all cores at start) down with it.
TEST(Threads, ZeroKeepsTheCountWhileBlasRunsOnOne) {
  set_num_threads(3);
  EXPECT_EQ(num_threads(), 3);
  set_num_threads(0);
  EXPECT_EQ(num_threads(), 3);
  EXPECT_EQ(openblas_get_num_threads(), 1);
}

}  // namespace
}  // namespace loratune
